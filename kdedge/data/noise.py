"""Seeded text corruption: a noisy view of clean texts, as an ASR system or a hurried user
would give them, for paired views (a teacher on the clean text, a student on the noisy one).

`corrupt` lowercases, drops punctuation, swaps a share of the words that have a common
confusion (their / there, to / too, ...) and edits exactly `round(char_rate x letters)` letters
(drop, swap with the next one, a keyboard neighbour, a doubled letter). It depends on the
text, the seed and the settings only, never on the row's position, so the same text is
corrupted the same way in every run and every split.

`--data demo-noisy` is the review demo with its `text` corrupted and the original kept in
`clean` (the teacher's view); `python -m kdedge.data.noise OUT.csv` writes that table as a CSV.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from typing import Any

NOISY_DEMO = "demo-noisy"  # data.source of the corrupted review demo
CLEAN_COLUMN = "clean"  # its column of the original texts
NOISE_SEED = 0  # the demo's corruption is fixed, like its data
NOISY_PRESET = {"data": {"teacher_text_column": CLEAN_COLUMN}}  # over the kind's demo preset

# QWERTY neighbours: a substitution picks one, as a slipped finger would
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
NEIGHBOURS = {
    c: "".join(row[j] for j in (i - 1, i + 1) if 0 <= j < len(row))
    for row in _ROWS for i, c in enumerate(row)
}
# words a transcriber or a typist confuses (both ways)
CONFUSIONS = {
    "their": "there", "there": "their", "they're": "their", "your": "you're", "you're": "your",
    "its": "it's", "it's": "its", "to": "too", "too": "to", "then": "than", "than": "then",
    "a": "uh", "and": "an", "of": "off", "off": "of", "were": "where", "where": "were",
    "would": "wood", "could": "cud", "know": "no", "no": "know", "right": "write",
    "for": "four", "two": "to", "see": "sea", "here": "hear", "hear": "here", "whole": "hole",
    "one": "won", "by": "buy", "been": "bin", "film": "flim", "movie": "moovie",
}
EDITS = ("drop", "swap", "neighbour", "double")
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation.replace(chr(39), ''))}]")


@dataclass(frozen=True)
class Noise:
    char_rate: float = 0.08  # share of the letters edited (exactly, rounded)
    word_rate: float = 0.5  # share of the confusable words replaced (each drawn)
    lowercase: bool = True  # ASR output and hurried typing have no case
    punctuation: bool = False  # keep punctuation (False: drop it, as ASR output does)
    seed: int = NOISE_SEED
    edits: tuple[str, ...] = EDITS  # the letter edits drawn from


def corrupt(text: str, noise: Noise = Noise()) -> str:
    """`text` as a noisy channel gives it; the same text, seed and settings give the same result."""
    return corrupt_counted(text, noise)[0]


def corrupt_counted(text: str, noise: Noise = Noise()) -> tuple[str, int]:
    """corrupt(), and how many letters it edited: round(char_rate x the letters left after the
    word-level changes)."""
    rng = random.Random(f"{noise.seed}:{noise.char_rate}:{noise.word_rate}:{noise.edits}:{text}")
    if noise.lowercase:
        text = text.lower()
    if not noise.punctuation:
        text = _PUNCTUATION.sub(" ", text)
    words = [CONFUSIONS.get(w.lower(), w) if w.lower() in CONFUSIONS and rng.random() < noise.word_rate
             else w for w in text.split()]
    chars = list(" ".join(words))
    letters = [i for i, c in enumerate(chars) if c.isalpha()]
    count = min(len(letters), round(noise.char_rate * len(letters)))
    for i in sorted(rng.sample(letters, count), reverse=True):  # later edits never move earlier ones
        edit = rng.choice(noise.edits)
        if edit == "drop":
            del chars[i]
        elif edit == "swap" and i + 1 < len(chars) and chars[i + 1] != chars[i]:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif edit == "double":
            chars.insert(i, chars[i])
        else:  # a neighbouring key (also a swap that would change nothing)
            options = NEIGHBOURS.get(chars[i].lower()) or "e"
            chars[i] = rng.choice(options.replace(chars[i].lower(), "") or "e")
    return "".join(chars), count


def noisy_table(table: Any, noise: Noise = Noise(), column: str = "text") -> Any:
    """`table` with `column` corrupted and the original kept in CLEAN_COLUMN."""
    return table.assign(**{CLEAN_COLUMN: table[column],
                           column: [corrupt(str(t), noise) for t in table[column]]})


def main(argv: list[str] | None = None) -> None:
    """Write the noisy review demo (text, clean, label) as a CSV."""
    import argparse

    from kdedge.demo import review_table

    parser = argparse.ArgumentParser(prog="python -m kdedge.data.noise", description=main.__doc__)
    parser.add_argument("out", help="the CSV file to write")
    parser.add_argument("--seed", type=int, default=NOISE_SEED)
    parser.add_argument("--char-rate", type=float, default=Noise.char_rate)
    parser.add_argument("--word-rate", type=float, default=Noise.word_rate)
    args = parser.parse_args(argv)
    noise = Noise(char_rate=args.char_rate, word_rate=args.word_rate, seed=args.seed)
    table = noisy_table(review_table(), noise)[["text", CLEAN_COLUMN, "label"]]
    table.to_csv(args.out, index=False)
    print(f"{len(table)} rows (text: noisy, {CLEAN_COLUMN}: the original, label) -> {args.out}")


if __name__ == "__main__":
    main()
