"""Generation models to ONNX: encoder and decoder (with the key/value cache) through optimum.

A classifier's parity is a logit difference; a generator's is the tokens it produces. The
check here decodes the same inputs greedily, for a fixed number of tokens, with PyTorch and
with onnxruntime (optimum's ORTModelForSeq2SeqLM / ORTModelForCausalLM), and compares the ids.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("kdedge")

GenerationTask = Literal["seq2seq", "causal-lm"]
# optimum's task names; "-with-past" adds the key/value cache so decoding does not recompute
# the prefix at every token
OPTIMUM_TASKS = {"seq2seq": "text2text-generation", "causal-lm": "text-generation"}
WITH_PAST = "-with-past"


def export_generator(source: Path, out: Path, task: GenerationTask) -> dict[str, Any]:
    """Write the ONNX graphs (and config files) of the model in `source` to `out`.

    With the key/value cache where optimum's configuration of the decoder has one; a BERT
    decoder (bert2bert) has none, so its decoder recomputes the prefix at each token. The GRU
    student's decoder takes its recurrent state, which serves as its cache.
    Returns {"files": [...], "key_value_cache": bool}.
    """
    from optimum.exporters.onnx import main_export

    if _is_gru(source):  # kdedge's own student: optimum does not know it
        from kdedge.models.gru_decoder import GruSeq2SeqModel, export_gru_onnx

        files = export_gru_onnx(GruSeq2SeqModel.from_pretrained(source), out)
        for item in Path(source).iterdir():  # config, generation config, tokenizer
            if (item.is_file() and item.suffix == ".json") or item.name.endswith(".txt"):
                shutil.copy2(item, Path(out) / item.name)
        return {"files": sorted(files), "key_value_cache": True}
    try:
        main_export(str(source), output=str(out), task=OPTIMUM_TASKS[task] + WITH_PAST)
        cached = True
    except ValueError as err:
        if "past key values" not in str(err):
            raise
        log.info("  %s; exporting without the key/value cache", str(err).rstrip("."))
        main_export(str(source), output=str(out), task=OPTIMUM_TASKS[task])
        cached = False
    return {"files": onnx_files(out), "key_value_cache": cached}


def _is_gru(folder: Path) -> bool:
    from kdedge.models.gru_decoder import MODEL_TYPE

    config = Path(folder) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == MODEL_TYPE


def onnx_files(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).glob("*.onnx"))


def load_onnx_generator(folder: Path, task: GenerationTask, **kwargs: Any) -> Any:
    """optimum's onnxruntime generator over the graphs in `folder` (with or without a cache);
    kwargs (provider, session_options) go to from_pretrained."""
    from optimum.onnxruntime import ORTModelForCausalLM, ORTModelForSeq2SeqLM

    if _is_gru(folder):
        from kdedge.models.gru_decoder import GruOnnxGenerator

        options = kwargs.get("session_options")
        return GruOnnxGenerator(folder, options.intra_op_num_threads if options else None)
    if task == "seq2seq":  # say which decoder files there are, so optimum looks for no others
        kwargs.setdefault("use_merged", any("merged" in n for n in onnx_files(folder)))
    family = ORTModelForSeq2SeqLM if task == "seq2seq" else ORTModelForCausalLM
    return family.from_pretrained(str(folder), use_cache=has_cache(folder), **kwargs)


def has_cache(folder: Path) -> bool:
    """Whether the exported decoder takes the key/value cache (a with-past or merged decoder,
    or a decoder-only model.onnx with past_key_values inputs), or the GRU student's state."""
    import onnx

    names = onnx_files(folder)
    if _is_gru(folder) or any("with_past" in name or "merged" in name for name in names):
        return True
    decoder = Path(folder) / "model.onnx"
    return decoder.is_file() and any(
        i.name.startswith("past_key_values")
        for i in onnx.load(str(decoder), load_external_data=False).graph.input)


def greedy_tokens(model: Any, batch: dict[str, Any], new_tokens: int) -> list[list[int]]:
    """Exactly `new_tokens` greedy tokens per row (EOS suppressed until then)."""
    out = model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         num_beams=1, do_sample=False)
    return out.tolist()


def layout_parity(layout: Any, pytorch_model: Any, onnx_model: Any, sources: list[str],
                  new_tokens: int) -> dict[str, Any]:
    """generation_parity on sources laid out as the model family needs (decoder-only prompts
    padded on the left): exactly `new_tokens` greedy tokens each."""
    return _compared(
        layout.continuations(pytorch_model, sources, new_tokens, min_new_tokens=new_tokens),
        layout.continuations(onnx_model, sources, new_tokens, min_new_tokens=new_tokens),
        new_tokens)


def _compared(expected: list[list[int]], got: list[list[int]], new_tokens: int,
              ) -> dict[str, Any]:
    mismatched = [i for i, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b]
    return {"rows": len(expected), "new_tokens": new_tokens, "mismatched_rows": mismatched,
            "passed": not mismatched}


def generation_parity(pytorch_model: Any, onnx_model: Any, batch: dict[str, Any],
                      new_tokens: int = 16) -> dict[str, Any]:
    """Whether onnxruntime generates the same ids as PyTorch on `batch`, row by row."""
    return _compared(greedy_tokens(pytorch_model, batch, new_tokens),
                     greedy_tokens(onnx_model, batch, new_tokens), new_tokens)


def run(ctx, task: Any) -> dict[str, Any]:
    """The export stage for generators: each model to ONNX, its greedy tokens checked against
    PyTorch on validation sources, its BLEU / ROUGE measured through onnxruntime, and a few
    test examples with every model's output for the report."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from kdedge.errors import KdedgeError
    from kdedge.export.classifier import model_sources
    from kdedge.models import register_auto_classes
    from kdedge.models.layouts import layout_for

    register_auto_classes()  # a GRU student loads through the Auto classes
    cfg, data = ctx.cfg.export, ctx.cfg.data
    models: dict[str, Any] = {}
    outputs: dict[str, list[str]] = {}
    probe = list(task.splits["validation"].texts[:cfg.parity_samples])
    for name, source in model_sources(ctx).items():
        out = ctx.work / name
        exported = export_generator(source, out, task.kind)
        tokenizer = AutoTokenizer.from_pretrained(source)
        onnx_model = load_onnx_generator(out, task.kind)
        family = AutoModelForCausalLM if task.kind == "causal-lm" else AutoModelForSeq2SeqLM
        pytorch_model = family.from_pretrained(source).eval()
        parity = layout_parity(layout_for(pytorch_model.config, tokenizer, data.max_length),
                               pytorch_model, onnx_model, probe, PARITY_TOKENS)
        log.info("  %s: %.1f MB in %s, greedy tokens %s PyTorch on %d sources", name,
                 folder_bytes(out) / 1e6, ", ".join(exported["files"]),
                 "match" if parity["passed"] else "DIFFER from", parity["rows"])
        if not parity["passed"]:
            raise KdedgeError(f"The {name} ONNX generator produces other tokens than PyTorch on "
                              f"validation rows {parity['mismatched_rows']}; report this model "
                              "with --debug output, it is an exporter fault.")
        scores, outputs[name] = generation_scores(onnx_model, tokenizer, task, data.max_length,
                                                  data.max_target_length)
        models[name] = {"path": name, "exporter": "optimum", "bytes": folder_bytes(out),
                        "files": exported["files"], "key_value_cache": exported["key_value_cache"],
                        "opset": None, "parity": parity, **scores}
    return {"models": models, "examples": examples(task, outputs)}


PARITY_TOKENS = 16  # greedy tokens compared per validation source
EXAMPLES = 8  # test sources shown in the report with every model's output
_SOURCE_CHARS = 300


def folder_bytes(folder: Path) -> int:
    """The size of a generator: all its ONNX graphs (and their external data)."""
    return sum(p.stat().st_size for p in Path(folder).iterdir()
               if p.suffix in (".onnx", ".onnx_data") or p.name.endswith(".data"))


def generation_scores(model: Any, tokenizer: Any, task: Any, max_length: int,
                      max_new_tokens: int) -> tuple[dict[str, Any], list[str]]:
    """Validation and test BLEU / ROUGE of greedy generations, and the test generations."""
    from kdedge.evaluate import generation_metrics
    from kdedge.models.layouts import layout_for

    layout = layout_for(model.config, tokenizer, max_length)
    metrics, test = {}, []
    for split in ("validation", "test"):
        data = task.splits[split]
        predictions = layout.texts(model, list(data.texts), max_new_tokens)
        metrics[split] = generation_metrics(predictions, [str(t) for t in data.labels])
        test = predictions
    return metrics, test


def examples(task: Any, outputs: dict[str, list[str]], keep: int = EXAMPLES) -> dict[str, Any]:
    """The first test sources with their gold target and every model's generation."""
    split = task.splits["test"]
    rows = [{"index": i, "source": str(split.texts[i])[:_SOURCE_CHARS], "gold": str(split.labels[i]),
             **{name: texts[i] for name, texts in outputs.items()}}
            for i in range(min(keep, len(split.texts)))]
    return {"split": "test", "examples": rows}
