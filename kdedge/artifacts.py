"""Run directories, stage manifests and fingerprints, and writes that are never half-done.

A stage writes into a hidden temporary directory; only after its manifest is written is the
directory renamed to its final name. So a directory named `03_distill/` with a manifest is
always complete, and an interrupted stage leaves only a `.partial` directory behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdedge.errors import KdedgeError

MANIFEST = "manifest.json"
# where the teacher and distill stages keep their model, inside their stage directories
MODEL_DIR = "model"
STUDENT_DIR = "student"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(stage: str, config: Any, inputs: dict[str, str]) -> str:
    """Hash of what determines a stage's result: its name, config section and inputs."""
    payload = canonical_json({"stage": stage, "config": config, "inputs": inputs})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; these are shared artifacts
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise KdedgeError(f"No space left on the device writing {path}; free some space and "
                              "run the command again (with --resume to keep finished stages).") from None
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise KdedgeError(f"Cannot read {path} ({err}); re-run the stage that writes it.") from None


def list_outputs(root: Path) -> dict[str, dict[str, Any]]:
    """Every file under root (but the manifest) with its sha256 and size."""
    outputs = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel != MANIFEST:
            outputs[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return outputs


def dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)


@dataclass
class Manifest:
    """What a stage did: enough to reproduce it, verify it, and report on it."""

    stage: str
    fingerprint: str
    config: Any
    inputs: dict[str, dict[str, str]]  # upstream stage -> {fingerprint, manifest_sha256}
    started_at: str
    duration_s: float
    status: str = "complete"
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def save(self, stage_dir: Path) -> None:
        write_json(stage_dir / MANIFEST, asdict(self))

    @classmethod
    def load(cls, stage_dir: Path) -> Manifest:
        data = read_json(stage_dir / MANIFEST)
        try:
            return cls(**data)
        except TypeError:
            raise KdedgeError(f"{stage_dir / MANIFEST} is not a kdedge manifest; re-run the stage.") from None

    def verify(self, stage_dir: Path) -> str | None:
        """None when every recorded output is present and unchanged, else what is wrong."""
        for rel, meta in self.outputs.items():
            try:
                path = resolve_inside(stage_dir, rel)
            except KdedgeError:
                return f"{stage_dir / MANIFEST} lists {rel!r}, a path outside its stage directory"
            if not path.is_file():
                return f"{path} is missing"
            if path.stat().st_size != meta["bytes"] or sha256_file(path) != meta["sha256"]:
                return f"{path} has changed since it was written"
        return None


def resolve_inside(root: Path, relative: str) -> Path:
    """Join a path read from a manifest or config to root, refusing any escape from it."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise KdedgeError(f"Path {relative!r} points outside {root}; refusing to use it.")
    return path
