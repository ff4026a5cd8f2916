"""Task metrics on fixed arrays, against values worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import toy_rows

from kdedge import tasks
from kdedge.data.dataset import TaskData, TaskSplit
from kdedge.evaluate import average_ranks, regression_metrics, task_metrics


def test_pearson_spearman_and_mse_by_hand() -> None:
    # deviations from the means 2.5: x = [-1.5, -0.5, 0.5, 1.5], y = [-0.5, -1.5, 1.5, 0.5]
    # sum xy = 3, sum x^2 = sum y^2 = 5, so r = 3 / 5; the values are their own ranks
    got = regression_metrics(np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([2.0, 1.0, 4.0, 3.0]))
    assert got == {"pearson": 0.6, "spearman": 0.6, "mse": 1.0, "examples": 4}


def test_spearman_gives_ties_their_average_rank() -> None:
    pred, gold = np.array([1.0, 2.0, 2.0, 5.0]), np.array([1.0, 2.0, 3.0, 3.0])
    assert average_ranks(pred).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert average_ranks(gold).tolist() == [1.0, 2.0, 3.5, 3.5]
    got = regression_metrics(pred, gold)
    # Pearson: dx = [-1.5, -0.5, -0.5, 2.5], dy = [-1.25, -0.25, 0.75, 0.75] -> 3.5 / sqrt(9 x 2.75)
    assert got["pearson"] == pytest.approx(7 / 99**0.5, abs=1e-6)
    # Spearman: rank deviations [-1.5, 0, 0, 1.5] and [-1.5, -0.5, 1, 1] -> 3.75 / 4.5
    assert got["spearman"] == pytest.approx(5 / 6, abs=1e-6)
    assert got["mse"] == pytest.approx((0 + 0 + 1 + 4) / 4)


def test_a_constant_prediction_has_no_correlation() -> None:
    got = regression_metrics(np.full(3, 2.0), np.array([1.0, 2.0, 4.0]))
    assert (got["pearson"], got["spearman"]) == (0.0, 0.0)
    assert got["mse"] == pytest.approx((1 + 0 + 4) / 3)


def test_task_metrics_picks_the_task() -> None:
    scores = TaskData(["score"], {"test": TaskSplit(["a", "b"], np.array([0.5, 1.5], np.float32))},
                      "regression")
    assert task_metrics(np.array([[0.0], [1.0]]), np.array([0.5, 1.5]), scores)["pearson"] == 1.0
    classes = TaskData(["neg", "pos"], {})
    got = task_metrics(np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([0, 0]), classes)
    assert got["accuracy"] == 0.5 and got["confusion"] == [[1, 1], [0, 0]]
    assert (scores.num_labels, classes.num_labels) == (1, 2)
    assert (tasks.get("classification").primary_metric,
            tasks.get("regression").primary_metric) == ("accuracy", "pearson")


def test_generation_metrics_on_known_pairs() -> None:
    from kdedge.evaluate import generation_metrics

    same = generation_metrics(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert same == {"bleu": pytest.approx(100.0), "rouge1": 100.0, "rouge2": 100.0,
                    "rougeL": 100.0, "examples": 1}
    close = generation_metrics(["the cat sat on a mat", "hello there"],
                               ["the cat sat on the mat", "hello there friend"])
    assert close["bleu"] == pytest.approx(49.2782, abs=1e-3)
    # ROUGE-1 F1: 5/6 for the first pair, 2 * (1 * 2/3) / (1 + 2/3) = 0.8 for the second
    assert close["rouge1"] == pytest.approx(100 * (5 / 6 + 0.8) / 2, abs=1e-3)
    assert generation_metrics(["x"], ["completely different"])["rougeL"] == 0.0
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        generation_metrics(["a", "b"], ["a"])


def test_rouge_f1_scores_each_example() -> None:
    from kdedge.evaluate import rouge_f1

    scores = rouge_f1(["the cat sat on a mat", "hello there", "x"],
                      ["the cat sat on the mat", "hello there friend", "completely different"])
    np.testing.assert_allclose(scores["rouge1"], [5 / 6, 0.8, 0.0], atol=1e-9)
    # ROUGE-2: 3 of 5 bigrams shared ("the cat", "cat sat", "sat on"); 1 of 1 against 1 of 2
    np.testing.assert_allclose(scores["rouge2"], [3 / 5, 2 / 3, 0.0], atol=1e-9)
    with pytest.raises(ValueError, match="no references"):
        rouge_f1([], [])


def test_onnx_quality_scores_one_text_per_call_with_the_batched_figure_beside(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    import warnings

    import onnxruntime as ort
    from onnxruntime.quantization import quantize_dynamic
    from optimum.exporters.onnx import main_export
    from transformers import AutoTokenizer

    from kdedge.evaluate import encode, onnx_quality, shipping_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main_export(model_name_or_path=str(tiny_model_dir), output=tmp_path,
                    task="text-classification", do_validation=False)
    int8 = tmp_path / "int8.onnx"
    quantize_dynamic(tmp_path / "model.onnx", int8)  # per-batch activation scales
    texts = [row["sentence"] for row in toy_rows(70, seed=3)]
    labels = np.random.default_rng(0).integers(0, 2, len(texts))
    task = TaskData(["neg", "pos"], {"test": TaskSplit(texts, labels)})
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    metrics, logits = onnx_quality(int8, tokenizer, task, 16, splits=("test",))

    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def run(chunk: list[str]) -> np.ndarray:
        enc = encode(tokenizer, chunk, 16, "np")
        return session.run(["logits"], {k: v for k, v in enc.items() if k in names})[0]

    alone = np.concatenate([run([text]) for text in texts])  # no padding anywhere
    batched = np.concatenate([run(texts[i:i + 32]) for i in range(0, len(texts), 32)])
    np.testing.assert_array_equal(logits["test"], alone)
    assert metrics["test"] == task_metrics(alone, labels, task)
    assert metrics["evaluation"] == {"batch_size": 1, "padding": False}
    expected = task_metrics(batched, labels, task)
    assert metrics["batched"]["test"] == {"accuracy": expected["accuracy"],
                                          "macro_f1": expected["macro_f1"], "examples": 70}
    assert metrics["batched"]["batch_size"] == 32
    # the gate's score is the worse of the two ways of calling the model
    assert shipping_score(int8, tokenizer, task, "test", 16) == min(
        expected["accuracy"], metrics["test"]["accuracy"])


def test_length_sorted_passes_return_every_row_in_the_texts_order(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdedge.evaluate import length_sorted, torch_logits

    texts = ["a b c d e", "a", ("ab", "c"), "abc", ("a", "b")]
    ordered, back = length_sorted(texts)
    assert ordered == ["a", ("a", "b"), ("ab", "c"), "abc", "a b c d e"]  # ties keep their order
    assert [ordered[i] for i in back] == texts
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    sentences = [row["sentence"] for row in toy_rows(20)]
    assert len({len(s) for s in sentences}) > 5  # lengths vary, so the order matters
    with torch.no_grad():  # one text at a time: nothing padded, the rows' own order
        alone = np.concatenate([model(**tokenizer([s], return_tensors="pt")).logits.numpy()
                                for s in sentences])
    np.testing.assert_allclose(torch_logits(model, tokenizer, sentences, 32, batch_size=4), alone,
                               atol=1e-5)
