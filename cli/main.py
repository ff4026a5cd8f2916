"""The `kdedge` command: parse options, build a config, call the library.

Heavy libraries (torch, transformers, onnxruntime) are imported inside command bodies, so
`kdedge --help` answers at once.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="kdedge", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Distill a teacher into a small student, export it to ONNX, quantize, benchmark and "
         "report, in one command: `kdedge compress` (with no options it runs the built-in demo).",
)
_state = {"debug": bool(os.environ.get("KDEDGE_DEBUG"))}
HELPER_EXIT_DELAY_S = 5.0  # see _error

# training on several processes (compress, teacher, distill); see kdedge.launch
LauncherOption = Annotated[str | None, typer.Option(
    help="Train on several processes: 'accelerate' runs this command under `accelerate launch` "
         "(see docs/distributed.md).")]
NumProcessesOption = Annotated[int | None, typer.Option(
    help="Processes for --launcher accelerate (default: the Accelerate config's).")]
AccelerateConfigOption = Annotated[Path | None, typer.Option(
    help="An Accelerate config file (machines, processes, addresses) for --launcher accelerate.")]

STAGE_HELP = {
    "data": "Load, split and label-map the dataset of an existing run.",
    "teacher": "Load or fine-tune the teacher of an existing run.",
    "distill": "Distill the student of an existing run.",
    "export": "Export teacher and student of an existing run to ONNX and check parity.",
    "quantize": "Quantize the student ONNX model of an existing run (int8, gated on accuracy).",
    "bench": "Benchmark the models of an existing run, each in its own process.",
    "report": "Write report.json and report.md for an existing run.",
    "bundle": "Write the deployment bundle (model, tokenizer, labels, predict.py, model card) of "
              "an existing run.",
}


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors, debug lines "
                                        "and the output of tools run underneath (pip).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    _state["debug"] = _state["debug"] or debug
    level = logging.DEBUG if _state["debug"] else logging.INFO
    _setup_logging(logging.WARNING if quiet or not _is_main() else level)


@app.command()
def compress(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="A YAML recipe; options "
                                                "given here override it.")] = None,
    data: Annotated[str | None, typer.Option(help="CSV / JSONL / Parquet file or folder, a "
                                             "datasets name, or 'demo'. [data.source]")] = None,
    text_column: Annotated[list[str] | None, typer.Option(
        help="Text column; give it twice for sentence pairs. [data.text_columns]")] = None,
    label_column: Annotated[str | None, typer.Option(help="[data.label_column]; for seq2seq "
                                                     "the target text.")] = None,
    teacher_text_column: Annotated[str | None, typer.Option(
        help="Paired views: the column the teacher reads (the clean text) while the student "
             "reads --text-column (noisy or transcribed). [data.teacher_text_column]")] = None,
    task: Annotated[str | None, typer.Option(help="classification, regression, seq2seq (with "
                                             "'demo' data: BBC article -> headline), "
                                             "causal-lm (prompt -> continuation) or embedding "
                                             "(sentence vectors for search; no labels). "
                                             "[data.task]")] = None,
    teacher: Annotated[str | None, typer.Option(help="Directory, hub id or 'demo'. "
                                                "[teacher.model]")] = None,
    extra_teacher: Annotated[list[str] | None, typer.Option(
        help="Another teacher for --method multi-teacher (repeatable). "
             "[distill.multi_teacher.teachers]")] = None,
    student: Annotated[str | None, typer.Option(help="Layer count (3), teacher layers (1,3,5), "
                                                "a directory, a hub id, or auto: search the "
                                                "candidates for the fastest within the budget "
                                                "below. [distill.student]")] = None,
    max_latency_ms: Annotated[float | None, typer.Option(
        help="With --student auto: the largest batch-1 p50 latency (ms) on the target (this "
             "machine, or --target-latency's device). [distill.search.max_latency_ms]")] = None,
    min_speedup: Annotated[float | None, typer.Option(
        help="With --student auto: the least speed-up over the teacher's ONNX at batch 1. "
             "[distill.search.min_speedup]")] = None,
    min_retention: Annotated[float | None, typer.Option(
        help="With --student auto: the share of the teacher's validation score to keep "
             "(default 0.97). [distill.search.min_retention]")] = None,
    target_latency: Annotated[Path | None, typer.Option(
        help="With --student auto: time the candidates on the target device, not here: the "
             "results JSON of `kdedge bench PROBE_BUNDLE` run there (see --probe-bundle). "
             "[distill.search.target_latency]")] = None,
    probe_bundle: Annotated[Path | None, typer.Option(
        help="With --student auto: run the data and teacher stages, write every candidate's "
             "untrained graphs to this folder for `kdedge bench` on the target device, and "
             "stop.")] = None,
    method: Annotated[str | None, typer.Option(help="Distillation recipe: kd, annealing, two-stage, "
                                               "multi-teacher, multi-task, gold; for seq2seq "
                                               "word-kd, seq-kd, imitkd, gold. "
                                               "[distill.recipe]")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/<data name>). "
                                             "[run.out]")] = None,
    seed: Annotated[int | None, typer.Option(help="[run.seed]")] = None,
    max_train_samples: Annotated[int | None, typer.Option(help="[data.max_train_samples]")] = None,
    epochs: Annotated[int | None, typer.Option(help="Distillation epochs. "
                                               "[distill.training.epochs]")] = None,
    trust_remote_code: Annotated[bool | None, typer.Option(
        "--trust-remote-code", help="Run code shipped with the teacher. [teacher.trust_remote_code]",
    )] = None,
    max_accuracy_drop: Annotated[str | None, typer.Option(
        help="Largest validation drop the int8 student may show against fp32: absolute (0.01) "
             "or relative (1%); fallbacks are tried when it is exceeded. "
             "[quantize.max_drop]")] = None,
    strict: Annotated[bool | None, typer.Option(
        "--strict", help="Fail the run when no int8 student passes the accuracy gate. "
                         "[quantize.strict]")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any config key, e.g. --set "
                                                   "distill.temperature=4 (repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Write config.resolved.yaml to the "
                                          "run directory and stop.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Skip stages whose fingerprint and "
                                         "outputs are unchanged.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Delete an existing run in the run "
                                        "directory and start over.")] = False,
    launcher: LauncherOption = None,
    num_processes: NumProcessesOption = None,
    accelerate_config: AccelerateConfigOption = None,
) -> None:
    """Run the whole chain: data, teacher, distill, export, quantize, bench, report, bundle."""
    from kdedge import pipeline, preflight
    from kdedge.config import load_config
    from kdedge.errors import KdedgeError
    from kdedge.extras import require_compress

    require_compress("compress")
    if _relaunched(launcher, num_processes, accelerate_config):
        return

    if resume and force:
        raise KdedgeError("--resume keeps the finished stages and --force deletes them; pass only "
                          "one of the two.")
    options: dict[str, Any] = {
        "data.source": data, "data.text_columns": text_column, "data.label_column": label_column,
        "data.teacher_text_column": teacher_text_column,
        "data.task": task,
        "teacher.model": teacher, "distill.student": student, "distill.recipe": method,
        "distill.search.max_latency_ms": max_latency_ms,
        "distill.search.min_speedup": min_speedup, "distill.search.min_retention": min_retention,
        "distill.search.target_latency": target_latency,
        "run.out": out, "run.seed": seed,
        "data.max_train_samples": max_train_samples, "distill.training.epochs": epochs,
        "teacher.trust_remote_code": trust_remote_code,
        "quantize.max_drop": None if max_accuracy_drop is None else _scalar(max_accuracy_drop),
        "quantize.strict": strict,
        "distill.multi_teacher.teachers": [{"model": t} for t in extra_teacher or []] or None,
    }
    overrides = {**parse_sets(set_ or []), **{k: v for k, v in options.items() if v is not None}}
    cfg = load_config(config, overrides)
    if probe_bundle is not None:
        from kdedge.search import device

        device.check_request(cfg, probe_bundle)
    preflight.check(cfg)  # every model, student and column, before any stage (also --dry-run)
    run_dir = pipeline.default_run_dir(cfg)
    pipeline.prepare_run(cfg, run_dir, resume=resume or dry_run, force=force)
    if dry_run:
        typer.echo(run_dir.resolve() / pipeline.RESOLVED_CONFIG)
        return
    if probe_bundle is not None:
        pipeline.run(cfg, run_dir, resume=resume, until="teacher")
        if _is_main():
            written = device.write_bundle(cfg, run_dir, probe_bundle).resolve()
            typer.echo(f"Time it on the device: kdedge bench {written} --target NAME --output "
                       "results.json; then run this command again with --target-latency "
                       "results.json --resume in place of --probe-bundle.")
            typer.echo(written)
        return
    pipeline.run(cfg, run_dir, resume=resume)
    if _is_main():
        _print_outcome(run_dir)
        _print_bundle(run_dir)


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """--set key=value pairs; values are read as YAML scalars or lists ("4", "[1, 8]")."""
    import yaml

    from kdedge.errors import KdedgeError

    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise KdedgeError(f"--set {pair!r} is not key=value; write e.g. --set distill.alpha=0.3.")
        try:
            parsed[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            example = f"{key.strip()}='...'"
            shown = f'"{example}"' if example.isprintable() else repr(example)  # one line always
            raise KdedgeError(f"--set {pair!r} has a value that is not valid YAML "
                              f"({str(err).splitlines()[0]}); quote it, e.g. --set {shown}.") from None
    return parsed


def _scalar(value: str) -> Any:
    """A number where the text is one ("0.01"), else the text ("1%")."""
    try:
        return float(value)
    except ValueError:
        return value


def _relaunched(launcher: str | None, num_processes: int | None, config: Path | None) -> bool:
    """Whether this command ran under `accelerate launch` in child processes (and is done)."""
    from kdedge import launch, parallel

    launch.check(launcher, num_processes, config)
    if launcher is None or parallel.launched() or (num_processes == 1 and config is None):
        return False
    status = launch.run(sys.argv[1:], num_processes, config)
    if status:
        raise typer.Exit(status)
    return True


def _is_main() -> bool:
    """False in the helper processes of a launched run, which print nothing."""
    from kdedge.parallel import helper_process

    return not helper_process()


def _run_stage(name: str, run_dir: Path) -> None:
    from kdedge import pipeline
    from kdedge.extras import require_compress

    require_compress(name)
    cfg = pipeline.load_run(run_dir)
    pipeline.run(cfg, run_dir, only=(name,))
    if name == "bundle":
        _print_bundle(run_dir)


TRAINING_STAGES = ("teacher", "distill")  # may run on several processes


def _stage_command(name: str) -> None:
    def command(run_dir: Annotated[Path, typer.Argument(help="A directory written by "
                                                        "kdedge compress.")]) -> None:
        _run_stage(name, run_dir)

    def training_command(run_dir: Annotated[Path, typer.Argument(help="A directory written by "
                                                                 "kdedge compress.")],
                         launcher: LauncherOption = None, num_processes: NumProcessesOption = None,
                         accelerate_config: AccelerateConfigOption = None) -> None:
        if not _relaunched(launcher, num_processes, accelerate_config):
            _run_stage(name, run_dir)

    chosen = training_command if name in TRAINING_STAGES else command
    chosen.__doc__ = STAGE_HELP[name]
    app.command(name)(chosen)


for _name in STAGE_HELP:
    if _name not in ("bench", "report"):  # both take more than a run directory: below
        _stage_command(_name)


@app.command()
def bench(
    path: Annotated[Path, typer.Argument(help="A run directory (benchmarks its models as the "
                                         "bench stage), a bundle folder, a folder with "
                                         "model.onnx, or a .onnx file (benchmarks that model "
                                         "here), or a probe bundle (times every candidate "
                                         "of a student search here).")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Results JSON to write (default: bench-results.json; "
                               "probe-results.json for a probe bundle).")] = None,
    target: Annotated[str | None, typer.Option(
        help="This machine's name in the results (default: cpu-HOSTNAME).")] = None,
    batch_sizes: Annotated[str | None, typer.Option(
        help="Comma-separated batch sizes, e.g. 1,32 (default: the bundle's run, else 1,32).")] = None,
    sequence_lengths: Annotated[str | None, typer.Option(
        "--sequence-lengths", "--sequence-length",
        help="Tokens per input, comma-separated; the first is the headline (default: the "
             "bundle's run; required for a bare model).")] = None,
    threads: Annotated[str | None, typer.Option(
        help="onnxruntime intra-op thread counts, comma-separated (default: this machine's "
             "physical cores).")] = None,
    texts: Annotated[Path | None, typer.Option(
        help="Real texts to time, one per line (default: the bundle's sample_texts.txt).")] = None,
    warmup_runs: Annotated[int | None, typer.Option(
        help="Untimed runs first (default: the bundle's run, else 10).")] = None,
    min_runs: Annotated[int | None, typer.Option(
        help="Timed runs at least (default: the bundle's run, else 50).")] = None,
    min_duration: Annotated[float | None, typer.Option(
        help="Seconds each batch size is timed at least (default: the bundle's run, else 5).")] = None,
) -> None:
    """Benchmark the models of a run, or one ONNX model or a probe bundle on this machine (a
    target device needs only kdedge's runtime extra, no torch), and write a results JSON."""
    from kdedge.errors import KdedgeError
    from kdedge.pipeline import RUN_MANIFEST
    from kdedge.search import device

    standalone = {"--output": output, "--target": target, "--batch-sizes": batch_sizes,
                  "--sequence-lengths": sequence_lengths, "--threads": threads, "--texts": texts,
                  "--warmup-runs": warmup_runs, "--min-runs": min_runs,
                  "--min-duration": min_duration}
    if (path / RUN_MANIFEST).is_file():
        given = [name for name, value in standalone.items() if value is not None]
        if given:
            raise KdedgeError(f"{given[0]} applies to a bundle or ONNX model; a run's bench "
                              "settings are its config's bench section (kdedge compress --set "
                              "bench.KEY=VALUE --resume).")
        _run_stage("bench", path)
        return
    if (path / device.BUNDLE_FILE).is_file():
        _bench_probe_bundle(path, standalone)
        return
    from kdedge.bench.standalone import DEFAULT_OUTPUT, bench_path

    output = output or DEFAULT_OUTPUT
    results = bench_path(path, output=output, target=target,
                         batch_sizes=_int_list(batch_sizes, "--batch-sizes"),
                         sequence_lengths=_int_list(sequence_lengths, "--sequence-lengths"),
                         threads=_int_list(threads, "--threads"), texts_file=texts,
                         warmup_runs=warmup_runs, min_runs=min_runs, min_duration_s=min_duration)
    for name, row in results["models"].items():
        for point in row["latency"]:
            typer.echo(f"{name} on {results['target']}: threads {point['threads']}, length "
                       f"{point['sequence_length']}, batch {point['batch_size']}: p50 "
                       f"{point['p50_ms']:.2f} ms, {point['throughput_samples_per_s']} samples/s")
    typer.echo(output.resolve())


def _bench_probe_bundle(path: Path, options: dict[str, Any]) -> None:
    """`kdedge bench` on a probe bundle: every candidate graph at batch 1, at the bundle's
    sequence length and one thread count, so the student search can rank them."""
    from kdedge.errors import KdedgeError
    from kdedge.search import device

    fixed = [name for name in ("--batch-sizes", "--sequence-lengths") if options[name] is not None]
    if fixed:
        raise KdedgeError(f"{fixed[0]} does not apply to a probe bundle: its candidates are timed "
                          "at batch 1 and the sequence length of the run that wrote it; drop it.")
    threads = _int_list(options["--threads"], "--threads")
    if threads is not None and len(threads) != 1:
        raise KdedgeError(f"--threads {options['--threads']} gives several counts, but a probe "
                          "bundle's candidates are ranked at one; pass one, e.g. --threads 4.")
    output = options["--output"] or device.DEFAULT_OUTPUT
    results = device.bench_bundle(path, output=output, target=options["--target"],
                                  threads=threads[0] if threads else None,
                                  texts_file=options["--texts"],
                                  warmup_runs=options["--warmup-runs"],
                                  min_runs=options["--min-runs"],
                                  min_duration_s=options["--min-duration"])
    for name, row in results["models"].items():
        point = row["latency"][0]
        typer.echo(f"{name} on {results['target']}: threads {point['threads']}, length "
                   f"{point['sequence_length']}, batch 1: p50 {point['p50_ms']:.2f} ms")
    typer.echo(f"Pass it to the search: kdedge compress ... --student auto --target-latency "
               f"{output}")
    typer.echo(Path(output).resolve())


def _int_list(text: str | None, option: str) -> list[int] | None:
    """"1,32" -> [1, 32]; the values' bounds are checked with the config's rules."""
    from kdedge.errors import KdedgeError

    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise KdedgeError(f"{option} {text!r} is not a comma-separated list of integers; write "
                          "e.g. 1,32.") from None


@app.command("report")
def report(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="A directory written by kdedge compress; several put their runs side by side.")],
    add_bench: Annotated[list[Path] | None, typer.Option(
        "--add-bench", help="A results JSON written by `kdedge bench` on a target device; "
                            "its models join the report as MODEL@TARGET rows (repeatable).")] = None,
    out: Annotated[Path, typer.Option(
        help="Where a comparison of several runs is written.")] = Path("kdedge-comparison"),
) -> None:
    """Write report.json, report.md and report.html for an existing run, with any device's
    bench added; given several runs, write a comparison of them into --out instead."""
    from kdedge import pipeline
    from kdedge.artifacts import MANIFEST
    from kdedge.errors import KdedgeError
    from kdedge.extras import require_compress
    from kdedge.report.targets import add_bench as add

    require_compress("report")
    if len(run_dirs) > 1:
        if add_bench:
            raise KdedgeError("--add-bench adds a device to one run; give it with a single "
                              "RUN_DIR, then compare the runs.")
        from kdedge.report.stage import write_comparison

        for path in write_comparison(run_dirs, out):
            typer.echo(path)
        return
    run_dir = run_dirs[0]
    cfg = pipeline.load_run(run_dir)
    for path in add_bench or []:  # each file is checked before the report changes
        typer.echo(f"added target {add(run_dir, path)} from {path}")
    bundled = (run_dir / pipeline.stage_dirname("bundle") / MANIFEST).is_file()
    # the bundle's card lists what to ship on each target, so a new target rewrites it too
    pipeline.run(cfg, run_dir, only=("report", "bundle") if add_bench and bundled else ("report",))
    _print_outcome(run_dir)
    if add_bench and bundled:
        _print_bundle(run_dir)


def _print_outcome(run_dir: Path) -> None:
    from kdedge.artifacts import Manifest
    from kdedge.pipeline import stage_dirname

    report = run_dir.resolve() / stage_dirname("report")
    metrics = Manifest.load(report).metrics
    if metrics.get("recommended"):
        typer.echo(f"Recommended: {metrics['recommended']}")
    for name in sorted(p.name for p in report.glob("report.*")):
        typer.echo(report / name)


def _print_bundle(run_dir: Path) -> None:
    from kdedge.artifacts import Manifest
    from kdedge.pipeline import stage_dirname

    folder = run_dir.resolve() / stage_dirname("bundle")
    metrics = Manifest.load(folder).metrics
    typer.echo(f"Bundled: {metrics['artifact']}")
    typer.echo(folder / metrics["path"])


def _setup_logging(level: int) -> None:
    from rich.logging import RichHandler

    from kdedge.progress import console

    logger = logging.getLogger("kdedge")
    logger.handlers[:] = [RichHandler(console=console, show_time=False, show_path=False,
                                      show_level=False, markup=False)]
    logger.setLevel(level)
    logger.propagate = False


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit."""
    from kdedge.errors import KdedgeError

    try:
        app()
    except KdedgeError as err:
        if _state["debug"]:
            raise
        _error(str(err))
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as done:
        if done.code == 130:  # typer turns Ctrl-C into exit status 130 before it reaches us
            _interrupted()
        raise
    except Exception as err:  # an unexpected failure still gets one line unless --debug
        from kdedge.extras import compress_hint, is_compress_module

        if _state["debug"]:
            raise
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            _error(f"No space left on the device writing {err.filename or 'a file'}; free some "
                   "space, then continue with `kdedge compress --resume --out RUN_DIR`.")
            sys.exit(2)
        if isinstance(err, ModuleNotFoundError) and is_compress_module(err):
            command = next((a for a in sys.argv[1:] if not a.startswith("-")), "compress")
            _error(compress_hint(command, [str(err.name)]))
            sys.exit(2)
        _error(f"unexpected {type(err).__name__}: {err} (run with --debug for the traceback, and "
               "please report it).")
        sys.exit(1)


def _error(message: str) -> None:
    """The one error line; in a launched run only the main process prints it."""
    if _is_main():
        typer.secho(f"error: {message}", fg="red", err=True)
    else:  # the main process most often fails the same way: let it print and exit first,
        # since the launcher stops every process when the first one exits
        time.sleep(HELPER_EXIT_DELAY_S)


def _interrupted() -> None:
    typer.secho("interrupted; finished stages are kept: continue with `kdedge compress "
                "--resume --out RUN_DIR`.", fg="yellow", err=True)
    sys.exit(130)


if __name__ == "__main__":
    main()
