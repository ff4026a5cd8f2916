"""onnxruntime sessions, set up the same way for evaluation and benchmarking.

Needs only onnxruntime and numpy, so it also runs on a target device without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kdedge.errors import KdedgeError

ONNX_FILE = "model.onnx"  # every exported or quantized model folder holds its graph under this name
# a GPU provider runs what it supports and hands the rest down this chain, as onnxruntime expects
_FALLBACKS = {"TensorrtExecutionProvider": ("CUDAExecutionProvider", "CPUExecutionProvider"),
              "CUDAExecutionProvider": ("CPUExecutionProvider",)}


def ort_session(path: Path, threads: int | None = None, provider: str = "CPUExecutionProvider"):
    """An InferenceSession with an explicit intra-op thread budget (None: onnxruntime decides)."""
    import onnxruntime as ort

    model = path / ONNX_FILE if path.is_dir() else path
    if not model.is_file():
        raise KdedgeError(f"ONNX model {model} does not exist; run the export stage first.")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(model), options,
                                    providers=[provider, *_FALLBACKS.get(provider, ())])
    except Exception as err:  # onnxruntime raises its own untyped errors for corrupt files
        raise KdedgeError(f"onnxruntime cannot load {model} ({str(err).splitlines()[0]}); "
                          "re-export the model.") from None


def ort_feed(session: Any, encoded: dict[str, Any]) -> dict[str, np.ndarray]:
    """The tokenizer's arrays that this graph takes, as int64."""
    names = {inp.name for inp in session.get_inputs()}
    return {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items() if k in names}
