"""web/: the bundled classifier in the folder layout transformers.js loads, in a browser or Node.

transformers.js reads config.json, tokenizer.json and tokenizer_config.json beside
onnx/model.onnx (dtype "fp32") and onnx/model_quantized.onnx (dtype "q8"); the dtype it loads
when the app names none is `transformers.js_config.dtype` in config.json, here the precision the
bundle ships. Only Hugging Face encoders that transformers.js implements get this folder: a
BiRNN student is kdedge's own architecture, which no JavaScript runtime knows.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdedge.artifacts import read_json, write_json
from kdedge.runtime import ONNX_FILE

if TYPE_CHECKING:
    from kdedge.tasks.base import TaskKind

WEB_DIR = "web"
# encoder families with a sequence-classification class in transformers.js (its models.js)
WEB_MODEL_TYPES = frozenset({"bert", "distilbert", "roberta", "xlm-roberta", "albert", "electra",
                             "mobilebert", "deberta", "deberta-v2", "mpnet", "camembert"})
# kdedge's own architectures (the BiRNN, the GRU decoder) name their model_type so; transformers
# knows them only inside a process that imported kdedge, optimum and transformers.js never
KDEDGE_MODEL_TYPE_PREFIX = "kdedge-"
DTYPE_FILES = {"fp32": ONNX_FILE, "q8": "model_quantized.onnx"}  # transformers.js's file names
_PRECISION_DTYPES = {"fp32": "fp32", "int8": "q8"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def web_sources(artifact: str, report: Mapping[str, Any], folder_of: Callable[[str], Path],
                ) -> dict[str, Path]:
    """dtype -> the ONNX folder of the same model at that precision, the bundled one first.

    The student ships fp32 and, when quantization kept its accuracy, q8 beside it; the
    teacher has fp32 only.
    """
    family = artifact.partition("-")[0]
    rows = {row.get("name"): row for row in report.get("artifacts", [])}
    names = {"fp32": f"{family}-onnx", **({"q8": "student-int8"} if family == "student" else {})}
    sources = {}
    for dtype, name in names.items():
        row = rows.get(name) or {}
        folder = folder_of(name)
        passed = (row.get("quantization_gate") or {}).get("passed") is not False
        if row.get("produced") and passed and (folder / ONNX_FILE).is_file():
            sources[dtype] = folder
    default = _PRECISION_DTYPES.get(str((rows.get(artifact) or {}).get("precision")), "fp32")
    return dict(sorted(sources.items(), key=lambda item: item[0] != default))


def write_web(out: Path, sources: Mapping[str, Path], labels: Mapping[str, Any],
              max_length: int, kind: TaskKind) -> dict[str, Any]:
    """Write out/web/ from the ONNX folders by dtype (the first is the default) for the
    transformers.js pipeline of the task kind; return what bundle.json records, or why there is
    no web folder."""
    if kind.web_pipeline is None:
        return {"skipped": f"kdedge writes transformers.js's layout for classifiers; this "
                           f"bundle's model is a {kind.name} model"}
    if "fp32" not in sources:
        return {"skipped": "no fp32 ONNX model to ship"}
    config = read_json(sources["fp32"] / "config.json")
    model_type = config.get("model_type")
    if model_type not in WEB_MODEL_TYPES:
        return {"skipped": f"transformers.js has no {model_type!r} architecture (it runs "
                           f"{', '.join(sorted(WEB_MODEL_TYPES))})"}
    web = out / WEB_DIR
    (web / "onnx").mkdir(parents=True)
    for dtype, folder in sources.items():
        shutil.copyfile(folder / ONNX_FILE, web / "onnx" / DTYPE_FILES[dtype])
    default = next(iter(sources))
    names = [str(label) for label in labels["labels"]]
    config |= {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)},
               "transformers.js_config": {"dtype": default}}
    write_json(web / "config.json", config)
    shutil.copyfile(sources["fp32"] / TOKENIZER_FILES[0], web / TOKENIZER_FILES[0])
    tokenizer_path = sources["fp32"] / TOKENIZER_FILES[1]
    tokenizer_config = read_json(tokenizer_path) if tokenizer_path.is_file() else {}
    # the pipeline truncates at model_max_length: the length the model was trained and scored at
    tokenizer_config["model_max_length"] = max_length
    write_json(web / TOKENIZER_FILES[1], tokenizer_config)
    return {"path": WEB_DIR, "dtypes": list(sources), "default_dtype": default,
            "model_type": model_type, "pipeline": kind.web_pipeline}
