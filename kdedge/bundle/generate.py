#!/usr/bin/env python3
"""Generate text with the ONNX generator in this folder; needs only onnxruntime, numpy and
tokenizers.

    pip install onnxruntime numpy tokenizers
    python generate.py "first article" "second article"
    printf 'a source\\nanother\\n' | python generate.py -
    python generate.py --beams 4 "an article"

Prints one JSON line per input, in input order: the generated text and its token ids. As a
module: `from generate import generate`.

kdedge copies this file into every generator bundle unchanged. It decodes exactly as kdedge
scored the model: the sources tokenized and truncated as in training (bundle.json), greedy
search by default with transformers' stop rules (a row that has produced EOS continues with
padding until every row has, or until max_new_tokens), and the logit rules the model's
generation_config.json sets (min_length, no_repeat_ngram_size, repetition_penalty, forced BOS
and EOS). `--beams N` runs beam search with transformers' scoring (length_penalty and the
early_stopping heuristic from generation_config.json).

The graphs it runs, found by their inputs: an encoder and a decoder (optimum's decoder_model
with decoder_with_past_model, or decoder_model_merged, carrying the key/value cache; or a
decoder without a cache, fed the whole prefix; or kdedge's GRU decoder, carrying its state), or
one decoder-only model.onnx with or without past_key_values.
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
GENERATION_CONFIG = "generation_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
ENCODER = "encoder_model.onnx"
DECODER = "decoder_model.onnx"
DECODER_WITH_PAST = "decoder_with_past_model.onnx"
DECODER_MERGED = "decoder_model_merged.onnx"
DECODER_ONLY = "model.onnx"
PAST = "past_key_values."
PRESENT = "present."
DEFAULT_BATCH_SIZE = 1  # one source per call, the way most apps call a generator
NEG = -1.0e9
State = dict[str, np.ndarray]


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _inputs(session: Any) -> dict[str, Any]:
    return {i.name: i for i in session.get_inputs()}


def _run(session: Any, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


def _empty_past(session: Any, batch: int) -> State:
    """Zero-length key/value inputs for the first step: (batch, heads, 0, head size)."""
    past = {}
    for name, spec in _inputs(session).items():
        if name.startswith(PAST):
            dims = [d if isinstance(d, int) else 0 for d in spec.shape]
            dims[0] = batch
            past[name] = np.zeros(dims, dtype=np.float16 if "float16" in spec.type else np.float32)
    return past


def _as_past(outputs: dict[str, np.ndarray]) -> State:
    return {PAST + name[len(PRESENT):]: value for name, value in outputs.items()
            if name.startswith(PRESENT)}


class EncoderDecoder:
    """The source through the encoder once, then one decoder step per token."""

    def __init__(self, folder: Path, threads: int | None) -> None:
        self.encoder = _session(folder / ENCODER, threads)
        names = {p.name for p in folder.glob("*.onnx")}
        self.merged = None
        self.with_past = None
        if DECODER in names:
            self.decoder = _session(folder / DECODER, threads)
            if DECODER_WITH_PAST in names:
                self.with_past = _session(folder / DECODER_WITH_PAST, threads)
        elif DECODER_MERGED in names:
            self.decoder = self.merged = _session(folder / DECODER_MERGED, threads)
        else:
            raise FileNotFoundError(f"{folder} has {ENCODER} but no {DECODER} or {DECODER_MERGED}")
        self.decoder_inputs = _inputs(self.decoder)
        self.gru = "decoder_state" in self.decoder_inputs  # kdedge's GRU decoder

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> State:
        outputs = self.encoder.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
        state = {"encoder_hidden_states": outputs[0], "encoder_attention_mask": attention_mask}
        if self.gru:  # (layers, batch, width): kept batch-first like every other state array
            state["decoder_state"] = outputs[1].swapaxes(0, 1)
        return state

    def step(self, state: State, sequences: np.ndarray) -> tuple[np.ndarray, State]:
        context = {k: state[k] for k in ("encoder_hidden_states", "encoder_attention_mask")}
        if self.gru:
            logits, new_state = self.decoder.run(None, {
                "decoder_input_ids": sequences[:, -1:],
                "decoder_state": np.ascontiguousarray(state["decoder_state"].swapaxes(0, 1)),
                **context})
            return logits[:, -1], {**state, "decoder_state": new_state.swapaxes(0, 1)}
        past = {k: v for k, v in state.items() if k.startswith(PAST)}
        if past and self.with_past is not None:
            feed = {"input_ids": sequences[:, -1:], **past,
                    "encoder_attention_mask": state["encoder_attention_mask"]}
            outputs = _run(self.with_past, {k: v for k, v in feed.items()
                                            if k in _inputs(self.with_past)})
        elif self.merged is not None:
            first = not past
            feed = {"input_ids": sequences if first else sequences[:, -1:], **context,
                    **(_empty_past(self.merged, len(sequences)) if first else past),
                    "use_cache_branch": np.array([not first])}
            outputs = _run(self.merged, feed)
            if not first:  # the encoder's keys and values stay those of the first step
                outputs = {k: v for k, v in outputs.items() if ".encoder." not in k}
        else:  # the first step, or a decoder without a cache: the whole prefix
            outputs = _run(self.decoder, {"input_ids": sequences, **context})
        return outputs["logits"][:, -1], {**state, **_as_past(outputs)}


class DecoderOnly:
    """One graph over prompt + generated tokens, the prompts padded on the left."""

    def __init__(self, folder: Path, threads: int | None) -> None:
        self.model = _session(folder / DECODER_ONLY, threads)
        self.inputs = _inputs(self.model)
        self.cached = any(name.startswith(PAST) for name in self.inputs)

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> State:
        return {"attention_mask": attention_mask}

    def step(self, state: State, sequences: np.ndarray) -> tuple[np.ndarray, State]:
        mask = state["attention_mask"]
        if mask.shape[1] < sequences.shape[1]:  # every new token is attended to
            grown = np.ones((len(mask), sequences.shape[1] - mask.shape[1]), dtype=mask.dtype)
            mask = np.concatenate([mask, grown], axis=1)
        past = {k: v for k, v in state.items() if k.startswith(PAST)}
        fresh = sequences if not past else sequences[:, -1:]
        if self.cached and not past:
            past = _empty_past(self.model, len(sequences))
        positions = np.cumsum(mask, axis=1) - 1
        positions[mask == 0] = 1
        feed = {"input_ids": fresh if self.cached else sequences, "attention_mask": mask,
                "position_ids": positions[:, -(fresh if self.cached else sequences).shape[1]:],
                **past}
        outputs = _run(self.model, {k: v for k, v in feed.items() if k in self.inputs})
        return outputs["logits"][:, -1], {"attention_mask": mask, **_as_past(outputs)}


def _reorder(state: State, index: np.ndarray) -> State:
    """Every array in a state is batch-first: follow the beams (or rows) in `index`."""
    return {k: v[index] for k, v in state.items()}


class Rules:
    """The logit rules of generation_config.json that greedy and beam search apply, as
    transformers does (on the logits in greedy search, on the log-probabilities in beam)."""

    def __init__(self, config: dict[str, Any], eos: int, prompt: int, max_length: int,
                 min_new_tokens: int) -> None:
        self.eos, self.prompt, self.max_length = eos, prompt, max_length
        self.min_length = int(config.get("min_length") or 0)
        self.min_new_tokens = min_new_tokens
        self.no_repeat = int(config.get("no_repeat_ngram_size") or 0)
        self.penalty = float(config.get("repetition_penalty") or 1.0)
        self.forced_bos = config.get("forced_bos_token_id")
        self.forced_eos = config.get("forced_eos_token_id")

    def __call__(self, scores: np.ndarray, sequences: np.ndarray) -> np.ndarray:
        length = sequences.shape[1]
        if self.penalty != 1.0:
            rows = np.arange(len(scores))[:, None]
            seen = scores[rows, sequences]
            scores[rows, sequences] = np.where(seen < 0, seen * self.penalty, seen / self.penalty)
        if self.no_repeat and length + 1 >= self.no_repeat:
            for row, tokens in enumerate(sequences.tolist()):
                scores[row, _banned(tokens, self.no_repeat)] = -np.inf
        if length < self.min_length or length - self.prompt < self.min_new_tokens:
            scores[:, self.eos] = -np.inf
        for token, at in ((self.forced_bos, 1), (self.forced_eos, self.max_length - 1)):
            if token is not None and length == at:
                scores[:] = -np.inf
                scores[:, int(token)] = 0
        return scores


def _banned(tokens: list[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram already in `tokens`."""
    prefix = tuple(tokens[len(tokens) - n + 1:])
    return [tokens[i + n - 1] for i in range(len(tokens) - n + 1)
            if tuple(tokens[i:i + n - 1]) == prefix]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class Generator:
    """The graphs, tokenizer and generation settings of one bundle folder, loaded once."""

    def __init__(self, folder: Path = HERE, threads: int | None = None,
                 settings: dict[str, Any] | None = None) -> None:
        """`settings`: bundle.json's "generation" fields; by default read from bundle.json, or
        for a bare model folder from its config files."""
        folder = Path(folder)
        bundle = _read(folder / BUNDLE_FILE)
        spec = settings or bundle.get("generation") or _settings(folder)
        self.layout = spec["layout"]  # "seq2seq" or "causal"
        self.start, self.eos, self.pad = spec["start"], int(spec["eos"]), int(spec["pad"])
        self.separator = spec.get("separator")
        self.max_length, self.max_new_tokens = spec["max_length"], int(spec["max_new_tokens"])
        self.folder, self.tokenizer_spec = folder, bundle.get("tokenizer") or {}
        self._tokenizer: Any = None
        self.config = _read(folder / GENERATION_CONFIG)
        self.cleanup = bool(_read(folder / TOKENIZER_CONFIG).get("clean_up_tokenization_spaces"))
        self.graphs = (EncoderDecoder(folder, threads) if self.layout == "seq2seq"
                       else DecoderOnly(folder, threads))

    @property
    def tokenizer(self) -> Any:
        """tokenizer.json, truncating as in training; loaded when texts are first given."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(self.folder / self.tokenizer_spec.get(
                "file", "tokenizer.json")))
            if self.max_length:
                tokenizer.enable_truncation(max_length=int(self.max_length), direction=(
                    self.tokenizer_spec.get("truncation_side", "right")))
            tokenizer.no_padding()
            self._tokenizer = tokenizer
        return self._tokenizer

    # --- sources to ids, ids to text ----------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask): a seq2seq source with the tokenizer's special tokens,
        padded on the right; a decoder-only prompt as [BOS] source SEP, padded on the left."""
        if self.layout == "seq2seq":
            rows = [e.ids for e in self.tokenizer.encode_batch([str(t) for t in texts])]
        else:
            head = [] if self.start is None else [int(self.start)]
            rows = [[*head, *e.ids, int(self.separator)] for e in self.tokenizer.encode_batch(
                [str(t) for t in texts], add_special_tokens=False)]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            where = slice(0, len(row)) if self.layout == "seq2seq" else slice(width - len(row), width)
            ids[i, where], mask[i, where] = row, 1
        return ids, mask

    def decode(self, tokens: Sequence[int]) -> str:
        text = self.tokenizer.decode(list(tokens), skip_special_tokens=True)
        return (_clean_up(text) if self.cleanup else text).strip()

    def _cut(self, row: Sequence[int]) -> list[int]:
        """The generated tokens up to and including the first EOS, padding dropped."""
        row = list(row)
        return row[:row.index(self.eos) + 1] if self.eos in row else [t for t in row if t != self.pad]

    # --- decoding -----------------------------------------------------------------------------
    def _prefix(self, input_ids: np.ndarray) -> np.ndarray:
        """What the decoder has seen before the first new token."""
        if self.layout == "seq2seq":
            return np.full((len(input_ids), 1), int(self.start), dtype=np.int64)
        return input_ids

    def greedy(self, input_ids: np.ndarray, attention_mask: np.ndarray,
               max_new_tokens: int | None = None, min_new_tokens: int = 0) -> np.ndarray:
        """int64 [batch, prefix + steps]: the prefix, then one token per step; a row that has
        produced EOS continues with padding and decoding stops once every row has."""
        new = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        state = self.graphs.start(input_ids, attention_mask)
        sequences = self._prefix(input_ids)
        rules = Rules(self.config, self.eos, sequences.shape[1], sequences.shape[1] + new,
                      min_new_tokens)
        finished = np.zeros(len(sequences), dtype=bool)
        for _ in range(new):
            logits, state = self.graphs.step(state, sequences)
            chosen = rules(logits.astype(np.float32), sequences).argmax(-1)
            chosen = np.where(finished, self.pad, chosen).astype(np.int64)
            sequences = np.concatenate([sequences, chosen[:, None]], axis=1)
            finished |= chosen == self.eos
            if finished.all():
                break
        return sequences

    def beam(self, input_ids: np.ndarray, attention_mask: np.ndarray, beams: int,
             max_new_tokens: int | None = None, min_new_tokens: int = 0) -> list[list[int]]:
        """The best beam of each row (its new tokens), scored as transformers' beam search."""
        return [self._beam_row(input_ids[i:i + 1], attention_mask[i:i + 1], beams,
                               self.max_new_tokens if max_new_tokens is None else max_new_tokens,
                               min_new_tokens) for i in range(len(input_ids))]

    def _beam_row(self, input_ids: np.ndarray, attention_mask: np.ndarray, beams: int,
                  new: int, min_new_tokens: int) -> list[int]:
        penalty = float(self.config.get("length_penalty", 1.0))
        early = self.config.get("early_stopping", False)
        copies = np.zeros(beams, dtype=np.int64)
        state = _reorder(self.graphs.start(input_ids, attention_mask), copies)
        sequences = self._prefix(input_ids)[copies]
        prompt = sequences.shape[1]
        rules = Rules(self.config, self.eos, prompt, prompt + new, min_new_tokens)
        running = np.full(beams, NEG, dtype=np.float32)
        running[0] = 0
        finished: list[tuple[float, list[int]]] = []
        improvable = True
        for step in range(new):
            logits, state = self.graphs.step(state, sequences)
            scores = rules(_log_softmax(logits.astype(np.float32)), sequences) + running[:, None]
            vocab = scores.shape[1]
            flat = scores.reshape(-1)
            top = np.argsort(-flat, kind="stable")[:2 * beams]
            origin, tokens = top // vocab, top % vocab
            ends = (tokens == self.eos) | (step + 1 >= new)
            done = len(finished) == beams
            if improvable and not (done and early is True):
                for rank in range(beams):
                    if ends[rank]:
                        score = float(flat[top[rank]]) / ((step + 1) ** penalty)
                        finished.append((score, [*sequences[origin[rank], prompt:].tolist(),
                                             int(tokens[rank])]))
                finished = sorted(finished, key=lambda f: -f[0])[:beams]
            alive = flat[top] + ends * NEG
            keep = np.argsort(-alive, kind="stable")[:beams]
            running = alive[keep].astype(np.float32)
            sequences = np.concatenate([sequences[origin[keep]], tokens[keep, None]], axis=1)
            state = _reorder(state, origin[keep])
            if len(finished) == beams:
                length = step + 1 if not (early == "never" and penalty > 0) else new
                improvable &= running[0] / (length ** penalty) > min(f[0] for f in finished)
            if not improvable or (early is True and len(finished) == beams) or ends.all():
                break
        return finished[0][1] if finished else sequences[0, prompt:].tolist()

    def generate_ids(self, texts: Sequence[str], beams: int = 1,
                     max_new_tokens: int | None = None) -> list[list[int]]:
        ids, mask = self.encode(texts)
        if beams > 1:
            return [self._cut(row) for row in self.beam(ids, mask, beams, max_new_tokens)]
        out = self.greedy(ids, mask, max_new_tokens)
        return [self._cut(row) for row in out[:, self._prefix(ids).shape[1]:].tolist()]

    def generate(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE, beams: int = 1,
                 max_new_tokens: int | None = None) -> list[dict[str, Any]]:
        """One dict per text: the generated text and its token ids (up to EOS)."""
        if batch_size < 1 or beams < 1:
            raise ValueError(f"batch size and beams must be at least 1, got {batch_size} and {beams}")
        results = []
        for start in range(0, len(texts), batch_size):
            for tokens in self.generate_ids(texts[start:start + batch_size], beams, max_new_tokens):
                results.append({"text": self.decode(tokens), "tokens": tokens})
        return results


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _settings(folder: Path) -> dict[str, Any]:
    """A model folder without bundle.json (a run's exported generator): the token ids from its
    config files, for decoding ids given directly (as the bench does)."""
    config = {**_read(folder / "config.json"), **{
        k: v for k, v in _read(folder / GENERATION_CONFIG).items() if v is not None}}
    seq2seq = (folder / ENCODER).is_file()
    eos = config.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) else eos
    pad = config.get("pad_token_id")
    return {"layout": "seq2seq" if seq2seq else "causal",
            "start": config.get("decoder_start_token_id" if seq2seq else "bos_token_id"),
            "eos": eos, "pad": eos if pad is None else pad, "separator": None,
            "max_length": None, "max_new_tokens": 32}


_SPACED = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
           (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _clean_up(text: str) -> str:
    """transformers' clean_up_tokenization: no space before punctuation and contractions."""
    for spaced, joined in _SPACED:
        text = text.replace(spaced, joined)
    return text


_loaded: dict[tuple[str, int | None], Generator] = {}


def generate(texts: Iterable[str], batch_size: int = DEFAULT_BATCH_SIZE, beams: int = 1,
             folder: Path = HERE, threads: int | None = None) -> list[dict[str, Any]]:
    """Generations for texts with the bundle in `folder` (this file's folder by default)."""
    key = (str(Path(folder).resolve()), threads)
    if key not in _loaded:
        _loaded[key] = Generator(Path(folder), threads)
    return _loaded[key].generate(list(texts), batch_size, beams)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate with this bundle's ONNX model; prints "
                                                 "one JSON line per input text.")
    parser.add_argument("texts", nargs="+", help="source texts, or - to read one per line from stdin")
    parser.add_argument("--beams", type=int, default=1, help="beam search width (1: greedy)")
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
        results = generate(texts, args.batch_size, args.beams, threads=args.threads)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for result in results:
        print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
