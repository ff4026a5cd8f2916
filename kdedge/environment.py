"""What machine and software produced a number. Int8 speed depends on VNNI: record the flags."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "asimddp")
PACKAGES = ("kdedge", "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime")


def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            name, _, value = line.partition(":")
            name = name.strip()
            if name in ("model name", "Model") and value.strip():
                model = value.strip()
            elif name in ("flags", "Features"):
                flags.update(value.split())
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        ram = psutil.virtual_memory().total
    except ImportError:  # the runtime-only install still reports what it can
        physical, ram = None, None
    return {
        "model": model,
        "arch": platform.machine(),
        "isa": {flag: flag in flags for flag in ISA_FLAGS},
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "ram_bytes": ram,
    }


def physical_cores() -> int:
    return cpu_info()["physical_cores"] or os.cpu_count() or 1


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_sha() -> str | None:
    """The commit of the kdedge source tree, when it runs from a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def capture() -> dict[str, Any]:
    return {
        "cpu": cpu_info(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": package_versions(),
        "kdedge_git_sha": git_sha(),
    }
