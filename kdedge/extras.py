"""Which install a command needs. A target device installs only the runtime (`kdedge[runtime]`:
onnxruntime, tokenizers, numpy); compressing needs the `compress` extra (torch, transformers,
optimum, ...). A command that needs what is missing says so in one line, before any work.
"""

from __future__ import annotations

import importlib.util

COMPRESS_MODULES = ("torch", "transformers", "optimum", "onnx", "datasets", "safetensors",
                    "pandas", "pyarrow", "sacrebleu", "rouge_score", "accelerate", "jinja2")
INSTALL_COMPRESS = 'pip install "kdedge[compress]"'


def missing_compress_modules() -> list[str]:
    """The compress extra's import names that this environment lacks."""
    return [name for name in COMPRESS_MODULES if importlib.util.find_spec(name) is None]


def compress_hint(command: str, missing: list[str]) -> str:
    return (f"`kdedge {command}` needs the compression dependencies ({', '.join(missing)} "
            f"not installed); install them with {INSTALL_COMPRESS}.")


def require_compress(command: str) -> None:
    """Raise KdedgeError naming the install command when the compress extra is missing."""
    from kdedge.errors import KdedgeError

    missing = missing_compress_modules()
    if missing:
        raise KdedgeError(compress_hint(command, missing))


def is_compress_module(err: ModuleNotFoundError) -> bool:
    """Whether an import failed for want of the compress extra (not a bug in kdedge)."""
    return (err.name or "").partition(".")[0] in COMPRESS_MODULES
