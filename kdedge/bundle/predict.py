#!/usr/bin/env python3
"""Predict with the ONNX model in this folder; needs only onnxruntime, numpy and tokenizers.

    pip install onnxruntime numpy tokenizers
    python predict.py "first text" "second text"
    printf 'a text\\nanother\\n' | python predict.py -

Prints one JSON line per input, in input order: the label, its probability and every class's
probability for a classifier; the predicted score for a regression model. For a sentence-pair
model give each input as "text<TAB>pair". As a module: `from predict import predict`.

kdedge copies this file into every deployment bundle unchanged. It tokenizes exactly as kdedge
scored the model: truncation to the sequence length in bundle.json, padding to the longest text
of each batch with the pad token recorded there, and only the inputs the graph declares.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
BUNDLE_FILE = "bundle.json"
LABELS_FILE = "labels.json"
DEFAULT_BATCH_SIZE = 32

Text = str | Sequence[str]  # one text, or (text, pair) for a sentence-pair model


class Predictor:
    """The model, tokenizer and label map of one bundle folder, loaded once."""

    def __init__(self, folder: Path = HERE, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.meta = json.loads((folder / BUNDLE_FILE).read_text(encoding="utf-8"))
        labels = json.loads((folder / LABELS_FILE).read_text(encoding="utf-8"))
        self.task = labels["task"]
        self.labels = list(labels["labels"])
        self.pairs = len(labels["text_columns"]) == 2
        spec = self.meta["tokenizer"]
        self.tokenizer = Tokenizer.from_file(str(folder / spec["file"]))
        self.tokenizer.enable_truncation(max_length=int(self.meta["max_length"]),
                                         strategy=spec["truncation"],
                                         direction=spec["truncation_side"])
        self.tokenizer.enable_padding(direction=spec["padding_side"], pad_id=int(spec["pad_id"]),
                                      pad_token=spec["pad_token"])  # to the batch's longest
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(folder / self.meta["model"]), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [inp.name for inp in self.session.get_inputs()]
        self.output = self.meta["output"]

    def _encode(self, texts: Sequence[Text]) -> dict[str, np.ndarray]:
        items = [self._item(t) for t in texts]
        encodings = self.tokenizer.encode_batch(items)
        arrays = {"input_ids": [e.ids for e in encodings],
                  "attention_mask": [e.attention_mask for e in encodings],
                  "token_type_ids": [e.type_ids for e in encodings]}
        return {name: np.array(arrays[name], dtype=np.int64) for name in self.inputs}

    def _item(self, text: Text) -> Any:
        if isinstance(text, str):
            if self.pairs:
                first, sep, second = text.partition("\t")
                if not sep:
                    raise ValueError(f"this model reads sentence pairs; write {text[:40]!r} as "
                                     "'text<TAB>pair'")
                return (first, second)
            return text
        if len(text) != 2 or not self.pairs:
            raise ValueError("give one string per input (a (text, pair) tuple only for a "
                             "sentence-pair model)")
        return (str(text[0]), str(text[1]))

    def logits(self, texts: Sequence[Text], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """The model's raw outputs, [len(texts), outputs], computed batch by batch."""
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        chunks = [self.session.run([self.output], self._encode(texts[i:i + batch_size]))[0]
                  for i in range(0, len(texts), batch_size)]
        width = next(o.shape[-1] for o in self.session.get_outputs() if o.name == self.output)
        return np.concatenate(chunks) if chunks else np.zeros((0, width), dtype=np.float32)

    def predict(self, texts: Sequence[Text], batch_size: int = DEFAULT_BATCH_SIZE,
                ) -> list[dict[str, Any]]:
        """One dict per text: label, score and probabilities, the regression score, or the raw
        output of a graph that returns no logits (an embedding)."""
        outputs = self.logits(list(texts), batch_size).astype(np.float64)
        if self.output != "logits":
            return [{self.output: [round(float(x), 7) for x in row]} for row in outputs]
        if self.task == "regression":
            return [{"score": float(row[0])} for row in outputs]
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        results = []
        for row in probabilities:
            best = int(row.argmax())
            results.append({"label": self.labels[best], "label_id": best,
                            "score": float(row[best]),
                            "probabilities": dict(zip(self.labels, map(float, row), strict=True))})
        return results


_loaded: dict[tuple[str, int | None], Predictor] = {}


def predict(texts: Iterable[Text], batch_size: int = DEFAULT_BATCH_SIZE, folder: Path = HERE,
            threads: int | None = None) -> list[dict[str, Any]]:
    """Predictions for texts with the bundle in `folder` (this file's folder by default)."""
    key = (str(Path(folder).resolve()), threads)
    if key not in _loaded:
        _loaded[key] = Predictor(Path(folder), threads)
    return _loaded[key].predict(list(texts), batch_size)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Predict with this bundle's ONNX model; prints "
                                                 "one JSON line per input text.")
    parser.add_argument("texts", nargs="+", help="texts to classify, or - to read one per line "
                                                 "from stdin")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)
    texts: list[str] = []
    for text in args.texts:
        if text == "-":
            texts.extend(line.rstrip("\r\n") for line in sys.stdin if line.strip())
        else:
            texts.append(text)
    try:
        results = predict(texts, args.batch_size, threads=args.threads)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for result in results:
        print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
