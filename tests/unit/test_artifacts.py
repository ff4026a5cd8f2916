import os
import re
from pathlib import Path

import pytest

from kdedge.artifacts import Manifest, atomic_write_text, fingerprint, list_outputs, resolve_inside
from kdedge.errors import KdedgeError


def test_fingerprint_depends_on_config_and_inputs_only() -> None:
    base = fingerprint("distill", {"alpha": 0.5}, {"teacher": "abc"})
    assert base == fingerprint("distill", {"alpha": 0.5}, {"teacher": "abc"})
    assert len(base) == 16
    assert base != fingerprint("distill", {"alpha": 0.6}, {"teacher": "abc"})
    assert base != fingerprint("distill", {"alpha": 0.5}, {"teacher": "abd"})
    assert base != fingerprint("export", {"alpha": 0.5}, {"teacher": "abc"})


def test_manifest_verify_detects_changed_and_missing_outputs(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"0123456789")
    manifest = Manifest("export", "fp", {}, {}, "now", 1.0, outputs=list_outputs(tmp_path))
    manifest.save(tmp_path)
    loaded = Manifest.load(tmp_path)
    assert loaded.outputs["model.onnx"]["bytes"] == 10
    assert loaded.verify(tmp_path) is None
    (tmp_path / "model.onnx").write_bytes(b"0123456780")
    assert "has changed" in loaded.verify(tmp_path)
    (tmp_path / "model.onnx").unlink()
    assert "is missing" in loaded.verify(tmp_path)


def test_atomic_write_leaves_no_partial_file_when_writing_fails(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "report.json"
    atomic_write_text(target, "old")

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(KdedgeError, match=rf"^No space left on the device writing {re.escape(str(target))}; "
                                          r"free some space and run the command again"):
        atomic_write_text(target, "new content")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_paths_cannot_escape_the_run_directory(tmp_path: Path) -> None:
    assert resolve_inside(tmp_path, "04_export/model.onnx") == tmp_path.resolve() / "04_export/model.onnx"
    with pytest.raises(KdedgeError, match="points outside"):
        resolve_inside(tmp_path, "../../etc/passwd")


def test_a_manifest_cannot_point_outside_its_stage(tmp_path: Path) -> None:
    stage = tmp_path / "03_distill"
    stage.mkdir()
    (tmp_path / "secret.txt").write_text("not an artifact")
    manifest = Manifest(stage="distill", fingerprint="f", config={}, inputs={}, started_at="t",
                        duration_s=0.0, outputs={"../secret.txt": {"sha256": "0" * 64, "bytes": 15}})
    assert manifest.verify(stage) == (f"{stage / 'manifest.json'} lists '../secret.txt', a path "
                                      "outside its stage directory")
