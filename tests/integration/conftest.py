"""What the integration tests share: a target device's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def runtime_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a fresh virtual environment holding only `kdedge[runtime]` (no torch,
    no transformers): python -m venv, then pip install -e REPO[runtime] (pip's cache makes it
    quick)."""
    folder = tmp_path_factory.mktemp("runtime") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([str(folder / "bin" / "python"), "-m", "pip", "install", "-q", "-e",
                    f"{REPO}[runtime]"], check=True, timeout=600, env=env)
    return folder / "bin"
