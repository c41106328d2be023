"""Ablation reports: the paired two-level bootstrap of a row's difference from the baseline,
pairing by seed and question id, and the 2-standard-error fallback for runs without
per-question data."""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest

from joint_rag.report import paired_bootstrap, paired_differences, write_results


def _loop_bootstrap(diff: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The direct (slow) implementation over the same draws: index D, take the mean."""
    rng = np.random.default_rng(seed)
    n_seeds, n_questions = diff.shape
    seed_draws = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    question_draws = rng.integers(0, n_questions, size=(resamples, n_questions))
    stats = []
    for b in range(resamples):
        cells = [diff[s, q] for s in seed_draws[b] for q in question_draws[b]]
        stats.append(sum(cells) / len(cells))
    return np.array(stats)


def test_identical_rows_give_zero_interval():
    delta, low, high = paired_bootstrap(np.zeros((5, 300)))
    assert (delta, low, high) == (0.0, 0.0, 0.0)


def test_constant_shift_is_beyond_noise():
    rng = np.random.default_rng(1)
    base = rng.random((5, 300))
    delta, low, high = paired_bootstrap((base + 0.2) - base)
    assert delta == pytest.approx(0.2) and low == pytest.approx(0.2) and high == pytest.approx(0.2)
    assert low > 0


def test_zero_mean_noise_mostly_contains_zero():
    data = np.random.default_rng(7).normal(size=(5, 300))
    data -= data.mean()  # exactly zero mean: the interval of the mean must straddle 0
    inside = 0
    for seed in range(20):
        _, low, high = paired_bootstrap(data, resamples=500, seed=seed)
        inside += low <= 0 <= high
        assert high - low > 0.05  # question and seed noise: a real width
    assert inside >= 18


def test_vectorised_matches_the_loop():
    diff = np.random.default_rng(3).normal(0.1, 1.0, size=(3, 7))
    stats = _loop_bootstrap(diff, resamples=200, seed=5)
    delta, low, high = paired_bootstrap(diff, resamples=200, seed=5)
    assert delta == pytest.approx(diff.mean())
    assert low == pytest.approx(np.quantile(stats, 0.025))
    assert high == pytest.approx(np.quantile(stats, 0.975))


def test_fast_for_a_full_grid():
    diff = np.random.default_rng(0).random((5, 300))
    t0 = time.perf_counter()
    for _ in range(10 * 10):  # 10 rows x 10 metrics
        paired_bootstrap(diff)
    assert time.perf_counter() - t0 < 10


def test_pairing_drops_what_only_one_row_has():
    row = {
        0: {"a": {"em": 1.0}, "b": {"em": 1.0}, "only_row": {"em": 1.0}},
        1: {"a": {"em": 0.0}, "b": {"em": 1.0}},
        2: {"a": {"em": 1.0}, "b": {"em": 1.0}},  # the baseline has no seed 2
    }
    base = {
        0: {"a": {"em": 0.0}, "b": {"em": 1.0}, "only_base": {"em": 0.0}},
        1: {"a": {"em": 0.0}, "b": {"em": 0.0}},
        3: {"a": {"em": 0.0}, "b": {"em": 0.0}},
    }
    diff, seeds, ids = paired_differences(row, base, "em")
    assert seeds == [0, 1] and ids == ["a", "b"]
    assert diff.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    # a question one seed lacks (or has NaN for) is dropped from every seed
    base[1]["b"] = {"em": float("nan")}
    diff, seeds, ids = paired_differences(row, base, "em")
    assert seeds == [0, 1] and ids == ["a"]
    # no shared seed: nothing pairs
    diff, seeds, ids = paired_differences({5: row[0]}, base, "em")
    assert diff.size == 0 and seeds == [] and ids == []


def _runs(shift: float, seeds=(0, 1), n=20):
    """metrics.json-like results and questions of a baseline and a row `better` by `shift`."""
    rng = np.random.default_rng(0)
    results, questions = {}, {}
    for seed in seeds:
        base = rng.random(n)
        for variant, values in (("frozen", base), ("better", np.clip(base + shift, 0, 1)), ("same", base)):
            questions[(variant, seed)] = {f"q{i}": {"recall@1": float(v)} for i, v in enumerate(values)}
            results[(variant, seed)] = {"recall@1": float(values.mean()), "questions": float(n)}
    return results, questions


def test_report_writes_intervals(tmp_path):
    results, questions = _runs(0.3)
    md = write_results(tmp_path, "g", "b.yaml", ["frozen", "better", "same"], [0, 1], results, 1.0, questions)
    text = md.read_text()
    assert "paired bootstrap 95% intervals" in text
    assert "**Warning:**" in text and "2 seeds (fewer than 5)" in text and "20 evaluation questions" in text
    better = next(line for line in text.splitlines() if line.startswith("| better | 2 | 20 |"))
    assert better.endswith("]* |")
    same = next(line for line in text.splitlines() if line.startswith("| same | 2 | 20 |"))
    assert "+0.000 [+0.000, +0.000] |" in same
    with open(tmp_path / "results.csv") as fh:
        rows = {(r["variant"], r["seed"]): r for r in csv.DictReader(fh)}
    assert rows[("better", "beyond_noise")]["recall@1"] == "1"
    assert rows[("better", "method")]["recall@1"] == "bootstrap"
    assert rows[("better", "paired_questions")]["recall@1"] == "20"
    assert ("frozen", "delta") not in rows
    diff = json.loads((tmp_path / "results.json").read_text())["rows"]["same"]["difference"]["recall@1"]
    assert diff["low"] == diff["high"] == 0.0 and not diff["beyond_noise"]


def test_report_of_old_runs_falls_back_to_two_standard_errors(tmp_path):
    results, questions = _runs(0.3)
    del questions[("better", 1)]  # a mixed grid: seed 1 of `better` ran before questions.jsonl
    md = write_results(tmp_path, "g", "b.yaml", ["frozen", "better", "same"], [0, 1], results, 1.0, questions)
    assert "| better | 1 | 20 |" in md.read_text()  # the bootstrap uses the one paired seed
    md = write_results(tmp_path, "g", "b.yaml", ["frozen", "better", "same"], [0, 1], results, 1.0)
    text = md.read_text()
    assert "(2 SE)" in text and "| better | 2 (2 SE) | - |" in text
    with open(tmp_path / "results.csv") as fh:
        rows = {(r["variant"], r["seed"]): r for r in csv.DictReader(fh)}
    assert rows[("better", "method")]["recall@1"] == "2se"


def test_baseline_row_is_configurable(tmp_path):
    results, questions = _runs(0.3)
    md = write_results(
        tmp_path, "g", "b.yaml", ["frozen", "better"], [0, 1], results, 1.0, questions, "better"
    )
    text = md.read_text()
    assert "Difference from `better`" in text and "| frozen | 2 | 20 |" in text


def test_per_question_values_average_to_the_logged_metrics():
    from joint_rag.training.metrics import AnswerMetrics, RetrievalMetrics, answer_scores

    metric = RetrievalMetrics(recall_ks=(1, 2), mrr_k=3, ndcg_k=3)
    ranked = [["a", "b", "c"], ["c", "a", "a"], ["x", "y", "z"]]
    gold = [{"b": 1.0}, {"a": 2.0, "z": 1.0}, {"q": 0.0}]  # the third has no gold: skipped
    per = metric.per_query(ranked, gold)
    assert per[2] is None and per[0]["recall@1"] == 0.0 and per[0]["mrr@3"] == 0.5
    metric.update(ranked, gold)
    for name, value in metric.compute().items():
        assert float(value) == pytest.approx((per[0][name] + per[1][name]) / 2)
    preds, answers = ["the Paris", "Rome x"], [["Paris"], ["Rome"]]
    scores = answer_scores(preds, answers)
    assert scores == [{"em": 1.0, "f1": 1.0}, {"em": 0.0, "f1": pytest.approx(2 / 3)}]
    logged = AnswerMetrics()
    logged.update(preds, answers)
    assert float(logged.compute()["f1"]) == pytest.approx((1 + 2 / 3) / 2)
