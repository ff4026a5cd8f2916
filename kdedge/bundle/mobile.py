"""mobile/: the bundled model in onnxruntime's ORT format, for its mobile and minimal builds.

onnxruntime's own converter (`python -m onnxruntime.tools.convert_onnx_models_to_ort`) writes
model.ort, optimized for ARM ("Fixed" style, the one its docs advise for the CPU provider),
and required_operators.config, the operator list a reduced onnxruntime build is compiled with
(`build.sh --minimal_build --include_ops_by_config required_operators.config`). The app
tokenizes with tokenizer.json as predict.py does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from kdedge.errors import KdedgeError
from kdedge.runtime import ONNX_FILE

MOBILE_DIR = "mobile"
ORT_FILE = "model.ort"
OPERATORS_FILE = "required_operators.config"
TARGET_PLATFORM = "arm"  # phones; an ARM-optimized model still runs on x86 for checking


def write_mobile(out: Path) -> dict[str, Any]:
    """Convert out/model.onnx into out/mobile/; return what bundle.json records."""
    with tempfile.TemporaryDirectory(prefix="kdedge-ort-") as tmp:
        source, converted = Path(tmp) / "onnx", Path(tmp) / "ort"
        source.mkdir()
        shutil.copyfile(out / ONNX_FILE, source / ONNX_FILE)  # the converter takes a whole folder
        command = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort",
                   str(source), "--output_dir", str(converted), "--optimization_style", "Fixed",
                   "--target_platform", TARGET_PLATFORM]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not (converted / ORT_FILE).is_file():
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise KdedgeError(f"onnxruntime's ORT converter failed on {out / ONNX_FILE} "
                              f"({last[0][:200]}); re-export the model or upgrade onnxruntime.")
        mobile = out / MOBILE_DIR
        mobile.mkdir()
        shutil.copyfile(converted / ORT_FILE, mobile / ORT_FILE)
        operators = (converted / OPERATORS_FILE).read_text(encoding="utf-8")
        # name the model as the bundle holds it, not by the temporary path it was converted at
        (mobile / OPERATORS_FILE).write_text(operators.replace(str(converted / ORT_FILE),
                                                               f"{MOBILE_DIR}/{ORT_FILE}"),
                                             encoding="utf-8")
    import onnxruntime

    return {"path": MOBILE_DIR, "model": f"{MOBILE_DIR}/{ORT_FILE}",
            "operators": f"{MOBILE_DIR}/{OPERATORS_FILE}", "optimization": "Fixed",
            "target_platform": TARGET_PLATFORM, "onnxruntime": onnxruntime.__version__}
