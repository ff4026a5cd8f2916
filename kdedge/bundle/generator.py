"""What a generator bundle's bundle.json says about its graphs, for generate.py.

The token facts (decoder start, separator, EOS, padding) are the layout's (models/layouts.py),
the one place the pipeline's own generation reads them from, so the shipped script decodes
exactly as the run scored the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdedge.export.generation import has_cache, onnx_files


def describe(folder: Path, kind: Any, cfg: Any) -> dict[str, Any]:
    """{"graphs": the ONNX files, "key_value_cache", "generation": layout and lengths}."""
    from transformers import AutoConfig, AutoTokenizer

    from kdedge.models import register_auto_classes
    from kdedge.models.layouts import Seq2SeqLayout, layout_for

    register_auto_classes()  # a GRU student's config loads through the Auto classes
    layout = layout_for(AutoConfig.from_pretrained(folder), AutoTokenizer.from_pretrained(folder),
                        cfg.data.max_length)
    seq2seq = isinstance(layout, Seq2SeqLayout)
    return {"model": None, "graphs": onnx_files(folder), "key_value_cache": has_cache(folder),
            "output": "text",
            "generation": {"layout": "seq2seq" if seq2seq else "causal",
                           "start": layout.start, "separator": None if seq2seq else layout.separator,
                           "eos": layout.eos, "pad": layout.pad, "max_length": layout.max_length,
                           "max_new_tokens": cfg.data.max_target_length,
                           "search": "greedy"}}  # as the run scored it; generate.py --beams N
