"""The student search timed on the target device: `kdedge compress --probe-bundle` writes every
candidate's untrained graphs, `kdedge bench` times them there without torch, and the search
reads those times back after checking they are this run's candidates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import error_line, probe_results, run_cli
from test_pipeline import TINY

from kdedge.artifacts import sha256_file
from kdedge.bench.stats import latency_at
from kdedge.bundle.stage import text_lines
from kdedge.config import SearchConfig
from kdedge.data.dataset import load_task
from kdedge.search import device
from kdedge.search.probe import CandidateSpec, search_candidates

SPECS = ["1", "bilstm:hidden_size=8"]
SEARCH = SearchConfig(candidates=tuple(SPECS), vocabulary="trim")
CANDIDATES = search_candidates(SEARCH, 2)  # the tiny teacher has two layers
NAMES = ["teacher", "cut-1", "bilstm-hidden_size-8"]
GRAPHS = ["teacher-fp32", "cut-1-fp32", "cut-1-int8", "bilstm-hidden_size-8-fp32",
          "bilstm-hidden_size-8-int8"]
REDO = ("re-create the probe bundle (kdedge compress ... --probe-bundle DIR) with this run's "
        "settings and bench it on the device again (kdedge bench DIR).")
BLOCK_TORCH = ("import sys\n"  # `import torch` fails in every process that starts with it
               "sys.modules.update(torch=None, transformers=None, optimum=None)\n")


TIMES = {"teacher": {"fp32": 9.0}, "cut-1": {"fp32": 4.0, "int8": 3.0},
         "bilstm-hidden_size-8": {"fp32": 2.0, "int8": 2.5}}


@pytest.fixture(scope="module")
def bundle(tiny_csv: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory,
           ) -> tuple[Path, str]:
    """`kdedge compress --probe-bundle` on the toy data with the tiny two-layer teacher (it has
    a head, so its stage only scores it): the bundle and the command's output."""
    root = tmp_path_factory.mktemp("probe")
    with pytest.MonkeyPatch.context() as patch:
        code, out = _compress_probe(tiny_csv, tiny_model_dir, root, patch)
    assert code == 0, out
    return root / "bundle", out


def _compress_probe(csv: Path, teacher: Path, root: Path, patch: pytest.MonkeyPatch,
                    ) -> tuple[int, str]:
    from kdedge_cli import main as cli_main

    settings = {**TINY, "distill.student": "auto", "distill.search.candidates": SPECS,
                "bench.warmup_runs": 1, "bench.min_runs": 3}
    args = ["kdedge", "compress", "--data", str(csv), "--teacher", str(teacher), "--out",
            str(root / "run"), "--probe-bundle", str(root / "bundle"),
            *(f"--set={k}={json.dumps(v)}" for k, v in settings.items())]
    output = root / "stdout.txt"
    patch.setattr(sys, "argv", args)
    patch.setitem(cli_main._state, "debug", True)  # a failure shows its traceback
    with output.open("w") as handle:
        patch.setattr(sys, "stdout", handle)
        try:
            cli_main.main()
            code = 0
        except SystemExit as done:
            code = int(done.code or 0)
    return code, output.read_text()


@pytest.fixture(scope="module")
def benched(bundle: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory,
            ) -> tuple[dict[str, Any], Path, str]:
    """`kdedge bench BUNDLE` in processes where torch, transformers and optimum cannot be
    imported (the measuring children included), as on a runtime-only install."""
    root = tmp_path_factory.mktemp("device")
    (root / "sitecustomize.py").write_text(BLOCK_TORCH)
    output = root / "edge.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    done = subprocess.run([sys.executable, "-m", "kdedge_cli", "bench", str(bundle[0]), "--target",
                           "edge", "--threads", "1", "--min-duration", "0", "--output",
                           str(output)], capture_output=True, text=True, timeout=600, env=env,
                          cwd=root)
    assert done.returncode == 0, done.stderr
    return json.loads(output.read_text()), output, done.stdout


def test_the_probe_bundle_holds_every_candidate_graph_and_its_settings(
        bundle: tuple[Path, str]) -> None:
    folder, out = bundle
    assert out.splitlines()[-1] == str(folder.resolve())
    assert f"kdedge bench {folder.resolve()} --target NAME --output results.json" in out
    run = folder.parent / "run"
    assert sorted(p.name for p in run.iterdir() if p.name[:2].isdigit()) == ["01_data", "02_teacher"]
    manifest = json.loads((folder / device.BUNDLE_FILE).read_text())
    assert manifest["format"] == "kdedge-probe-bundle" and manifest["pairs"] is False
    settings = manifest["settings"]
    assert (settings["sequence_length"], settings["threads"], settings["min_runs"],
            settings["opset"]) == (16, 1, 3, 18)  # 16: what 95% of the toy texts fit
    assert settings["quantize"]["mode"] == "dynamic"
    assert list(manifest["candidates"]) == NAMES
    for candidate in CANDIDATES:
        entry = manifest["candidates"][candidate.name]
        assert (entry["student"], entry["vocabulary"]) == (candidate.student, candidate.vocabulary)
        assert list(entry["graphs"]) == list(candidate.precisions)
        for precision, graph in entry["graphs"].items():
            assert graph["path"] == f"{candidate.name}/{precision}"
            assert graph["model_sha256"] == sha256_file(folder / graph["path"] / "model.onnx")
            assert (folder / graph["path"] / "tokenizer.json").is_file()
        assert sorted(p.name for p in (folder / candidate.name).iterdir()) == sorted(
            candidate.precisions)  # no weights, no scratch
    assert manifest["candidates"]["teacher"]["vocabulary"] == "full"
    parameters = {name: entry["parameters"] for name, entry in manifest["candidates"].items()}
    assert parameters["teacher"] > parameters["cut-1"] > 0 and parameters["bilstm-hidden_size-8"] > 0
    validation = load_task(run / "01_data").splits["validation"].texts
    assert (folder / "sample_texts.txt").read_text().splitlines() == text_lines(validation[:64])
    assert not list(folder.parent.glob(".bundle.partial"))


def test_bench_times_every_graph_of_a_probe_bundle_without_torch(
        bundle: tuple[Path, str], benched: tuple[dict[str, Any], Path, str]) -> None:
    results, output, out = benched
    manifest = json.loads((bundle[0] / device.BUNDLE_FILE).read_text())
    assert results["target"] == "edge" and results["targets"] == ["cpu"]
    assert (results["threads"], results["sequence_lengths"], results["batch_sizes"]) == (
        [1], [16], [1])
    assert results["protocol"]["warmup_runs"] == 1 and results["protocol"]["min_runs"] == 3
    assert results["protocol"]["min_duration_s"] == 0  # --min-duration over the bundle's
    assert list(results["models"]) == GRAPHS
    for name, entry in manifest["candidates"].items():
        for precision, graph in entry["graphs"].items():
            row = results["models"][f"{name}-{precision}"]
            assert row["model_sha256"] == graph["model_sha256"] and row["path"] == graph["path"]
            [point] = row["latency"]
            assert (point["batch_size"], point["sequence_length"], point["threads"]) == (1, 16, 1)
            assert point["runs"] >= 3 and point["p50_ms"] > 0 and row["size_bytes"] > 0
            assert f"{name}-{precision} on edge: threads 1, length 16, batch 1: p50 " \
                   f"{point['p50_ms']:.2f} ms" in out
    assert results["probe"]["candidates"] == {
        name: {"student": e["student"], "vocabulary": e["vocabulary"], "parameters": e["parameters"],
               "graphs": {p: f"{name}-{p}" for p in e["graphs"]}}
        for name, e in manifest["candidates"].items()}
    assert results["probe"]["settings"] == manifest["settings"]
    assert results["environment"]["cpu"]["logical_cores"] >= 1
    assert out.splitlines()[-1] == str(output)


def test_the_search_reads_the_device_times_exactly(benched: tuple[dict[str, Any], Path, str],
                                                   ) -> None:
    results, output, _ = benched
    probed, source = device.read_results(output, CANDIDATES, 16)
    assert source == "measured on edge (kdedge bench on a probe bundle), 1 thread(s), sequence length 16"
    assert list(probed) == NAMES
    for candidate in CANDIDATES:
        found = probed[candidate.name]
        assert (found["student"], found["vocabulary"], found["sequence_length"], found["threads"]) \
            == (candidate.student, candidate.vocabulary, 16, 1)
        assert found["parameters"] == results["probe"]["candidates"][candidate.name]["parameters"]
        assert list(found["precisions"]) == list(candidate.precisions)
        for precision, row in found["precisions"].items():
            measured = results["models"][f"{candidate.name}-{precision}"]
            point = latency_at(measured)["1"]
            assert row == {"p50_ms": point["p50_ms"], "mean_ms": point["mean_ms"],
                           "size_bytes": measured["size_bytes"],
                           "load_average_1m": measured["load_average_1m"]}
    # a run searching fewer of the bundle's candidates reads just those
    assert list(device.read_results(output, CANDIDATES[:2], 16)[0]) == NAMES[:2]


def test_a_file_from_another_run_or_no_file_at_all_is_one_clear_error(tmp_path: Path) -> None:
    def error(path: Path, candidates: list[CandidateSpec] = CANDIDATES, length: int = 32) -> str:
        with pytest.raises(device.KdedgeError) as raised:
            device.read_results(path, candidates, length)
        return str(raised.value)

    file = tmp_path / "edge.json"
    head = f"Target latency file {file}"
    assert error(file) == (f"{head} does not exist; pass the results file `kdedge bench "
                           "PROBE_BUNDLE` wrote on the device (--target-latency).")
    file.write_text('{"target": "edge", ')
    assert error(file) == (f"{head} is not valid JSON (Expecting property name enclosed in double "
                           "quotes: line 1 column 20 (char 19)); pass the results file `kdedge "
                           "bench PROBE_BUNDLE` wrote on the device, unedited.")
    file.write_text(json.dumps({"target": "edge", "models": {}}))  # a bundle's bench results
    assert error(file) == (f"{head} is not the results of a probe bundle (it has no 'probe' "
                           "section); bench the folder `kdedge compress --probe-bundle DIR` "
                           "wrote, with `kdedge bench DIR` on the device.")
    probe_results(file, TIMES, CANDIDATES, sequence_length=64)
    assert error(file) == (f"{head} was measured at sequence length 64, but this run times its "
                           "candidates at 32 (bench.sequence_lengths, else the data's own); "
                           + REDO)
    probe_results(file, {k: v for k, v in TIMES.items() if k != "cut-1"}, CANDIDATES)
    assert error(file) == f"{head} has no candidate 'cut-1' (student 1); " + REDO
    full = [CandidateSpec(c.name, c.student, "full", c.precisions) for c in CANDIDATES]
    probe_results(file, TIMES, full)
    assert error(file) == (f"{head} timed candidate 'cut-1' as student 1 with vocabulary full, but "
                           "this run's is student 1 with vocabulary trim; " + REDO)
    other_teacher = [CandidateSpec("teacher", "12", "full", ("fp32",)), *CANDIDATES[1:]]
    probe_results(file, TIMES, CANDIDATES)
    assert error(file, other_teacher) == (f"{head} timed candidate 'teacher' as student 2 with "
                                          "vocabulary full, but this run's is student 12 with "
                                          "vocabulary full; " + REDO)
    probe_results(file, {**TIMES, "cut-1": {"fp32": 4.0}}, CANDIDATES)
    assert error(file) == (f"{head} has no batch-1 int8 time for candidate 'cut-1'; pass the "
                           "results file `kdedge bench PROBE_BUNDLE` wrote on the device, unedited.")
    broken = json.loads(probe_results(file, TIMES, CANDIDATES).read_text())
    broken["threads"] = "four"
    file.write_text(json.dumps(broken))
    assert error(file) == (f"{head} lacks its target, thread count, sequence length, candidates or "
                           "models; pass the results file `kdedge bench PROBE_BUNDLE` wrote on the "
                           "device, unedited.")


def test_bench_refuses_options_a_probe_bundle_fixes_and_a_damaged_bundle(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "bundle"
    (folder / "cut-1" / "int8").mkdir(parents=True)
    manifest = {"format": "kdedge-probe-bundle", "settings": {"sequence_length": 32},
                "candidates": {"cut-1": {"student": "1", "vocabulary": "trim", "graphs": {
                    "int8": {"path": "cut-1/int8", "model_sha256": "0" * 64}}}}}
    (folder / device.BUNDLE_FILE).write_text(json.dumps(manifest))
    for args, message in (
            (["--batch-sizes", "1,8"], "error: --batch-sizes does not apply to a probe bundle: its "
             "candidates are timed at batch 1 and the sequence length of the run that wrote it; "
             "drop it."),
            (["--sequence-length", "64"], "error: --sequence-lengths does not apply to a probe "
             "bundle: its candidates are timed at batch 1 and the sequence length of the run that "
             "wrote it; drop it."),
            (["--threads", "1,4"], "error: --threads 1,4 gives several counts, but a probe "
             "bundle's candidates are ranked at one; pass one, e.g. --threads 4."),
            ([], f"error: {folder / 'cut-1/int8/model.onnx'} is missing or differs from the graph "
             "probe-bundle.json names; copy the whole probe bundle to the device again.")):
        code, _, err = run_cli(["bench", str(folder), *args], capsys, monkeypatch)
        assert code == 2 and error_line(err) == message
    (folder / device.BUNDLE_FILE).write_text(json.dumps({**manifest, "settings": {}}))
    code, _, err = run_cli(["bench", str(folder)], capsys, monkeypatch)
    assert code == 2 and error_line(err) == (
        f"error: {folder / device.BUNDLE_FILE} is not a kdedge probe bundle manifest; copy the "
        "folder `kdedge compress --probe-bundle DIR` wrote, unedited.")
