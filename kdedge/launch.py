"""`--launcher accelerate`: start the same kdedge command on several processes.

kdedge does not start processes itself: it runs `accelerate launch` (torchrun underneath) on
its own command line, less the launcher options, and every process then finds its place
through kdedge.parallel. Mixed precision is a training setting of kdedge
(`*.training.mixed_precision`), so Accelerate is told "no" and kdedge's loop autocasts.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from kdedge.errors import KdedgeError

LAUNCHERS = ("accelerate",)
OPTIONS = ("--launcher", "--num-processes", "--accelerate-config")  # each takes a value


def check(launcher: str | None, num_processes: int | None, config_file: Path | None) -> None:
    if launcher is None:
        if num_processes is not None or config_file is not None:
            raise KdedgeError("--num-processes and --accelerate-config go with --launcher "
                              "accelerate; add it, e.g. --launcher accelerate --num-processes 2.")
        return
    if launcher not in LAUNCHERS:
        raise KdedgeError(f"--launcher {launcher!r} is not known; use --launcher accelerate.")
    if num_processes is not None and num_processes < 1:
        raise KdedgeError(f"--num-processes {num_processes} must be at least 1.")
    if config_file is not None and not config_file.is_file():
        raise KdedgeError(f"Accelerate config {config_file} does not exist; write one with "
                          "`accelerate config --config_file PATH` or leave the option out.")


def command(argv: list[str], num_processes: int | None, config_file: Path | None) -> list[str]:
    """The `accelerate launch` command line that runs `kdedge argv` (less the launcher options)
    on `num_processes` processes (or as the Accelerate config says)."""
    cmd = [sys.executable, "-m", "kdedge.launch"]  # accelerate launch, quiet on failure
    if config_file is not None:  # the topology (machines, processes, addresses) comes from it
        cmd += ["--config_file", str(config_file)]
    else:
        cmd += ["--num_machines", "1", "--dynamo_backend", "no", "--main_process_port",
                str(_free_port())]
        if (num_processes or 1) > 1:
            cmd.append("--multi_gpu")  # Accelerate's switch for several local processes
            # (torchrun); on a machine without GPUs they train on the CPU over gloo
    cmd += ["--mixed_precision", "no"]
    if num_processes is not None:
        cmd += ["--num_processes", str(num_processes)]
    return [*cmd, "-m", "kdedge_cli", *without_launcher_options(argv)]


def run(argv: list[str], num_processes: int | None, config_file: Path | None) -> int:
    """Run the command on the processes; its exit status."""
    return subprocess.run(command(argv, num_processes, config_file), check=False).returncode


def _accelerate_launch(args: list[str]) -> int:
    """`accelerate launch ARGS`, except that a failed process is not reported again: kdedge
    printed its one error line there, and torchrun's account of it (a log line per process and
    a traceback) would bury it. The exit status is the failed process's."""
    import logging

    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)
    try:
        launch_command(launch_command_parser().parse_args(args))
    except ChildFailedError as err:
        main = err.failures.get(0)
        if main is not None and main.exitcode > 0:  # the main process failed and said why
            return main.exitcode
        rank, failure = err.get_first_failure()  # another process failed on its own
        print(f"error: training process {rank} failed (exit status {failure.exitcode}); run the "
              "command again with --debug to see its traceback.", file=sys.stderr)
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


def without_launcher_options(argv: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in OPTIONS)):
            kept.append(arg)
    return kept


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(_accelerate_launch(sys.argv[1:]))
