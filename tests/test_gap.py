"""The usefulness-gap diagnostic (joint_rag/gap.py, `jrag gap`): the metrics on hand-made
rankings, the generator's per-passage log-likelihoods, the command end to end on the smoke config,
and bad input in one line (exit 2)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from joint_rag.cli import main
from joint_rag.data.types import Example
from joint_rag.gap import (
    aggregate,
    bootstrap_mean,
    kendall_tau_b,
    ndcg_at_k,
    passage_logliks,
    question_metrics,
    softmax_gains,
    spearman,
    usefulness_gap,
)

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "experiments" / "smoke.yaml")


def test_orders_that_agree_give_ndcg_1_and_no_gap():
    m = question_metrics([0.9, 0.5, 0.1], [-1.0, -2.0, -3.0], k=3, gold=[True, False, False])
    assert m["ndcg@k"] == pytest.approx(1.0)
    assert m["top1_differs"] == m["top1_beaten_by_1nat"] == 0.0 and m["loglik_gain"] == 0.0
    assert m["spearman"] == pytest.approx(1.0) and m["kendall"] == pytest.approx(1.0)
    assert m["useful_rank_of_top_sim"] == 1.0
    assert m["gold_in_candidates"] == m["gold_most_similar"] == m["gold_most_useful"] == 1.0


def test_reversed_orders_give_the_known_values():
    ll = [-3.0, -2.0, -1.0]  # the least similar passage is the most useful
    m = question_metrics([0.9, 0.5, 0.1], ll, k=3, gold=[False, False, True])
    g = np.exp(ll) / np.exp(ll).sum()  # softmax gains in similarity order
    d = [1.0, 1.0 / math.log2(3), 0.5]
    expected = (g[0] * d[0] + g[1] * d[1] + g[2] * d[2]) / (g[2] * d[0] + g[1] * d[1] + g[0] * d[2])
    assert m["ndcg@k"] == pytest.approx(expected)
    assert m["top1_differs"] == m["top1_beaten_by_1nat"] == 1.0 and m["loglik_gain"] == pytest.approx(2.0)
    assert m["spearman"] == pytest.approx(-1.0) and m["kendall"] == pytest.approx(-1.0)
    assert m["useful_rank_of_top_sim"] == 3.0
    assert m["gold_most_similar"] == 0.0 and m["gold_most_useful"] == 1.0
    # nDCG@1: only the top item counts: its gain over the best gain
    assert question_metrics([0.9, 0.5, 0.1], ll, k=1)["ndcg@k"] == pytest.approx(g[0] / g[2])
    assert "gold_most_useful" not in question_metrics([0.9, 0.5, 0.1], ll, k=1)  # no gold ids


def test_ties_float_noise_and_the_pieces():
    m = question_metrics([0.9, 0.5, 0.1], [-2.0, -2.0 + 5e-6, -4.0], k=3)  # noise-level difference
    assert m["top1_differs"] == 0.0 and m["useful_rank_of_top_sim"] == 1.0
    near = question_metrics([0.9, 0.5], [-2.0, -1.5], k=2)  # differs, but by half a nat
    assert near["top1_differs"] == 1.0 and near["top1_beaten_by_1nat"] == 0.0
    flat = question_metrics([0.9, 0.5, 0.1], [-2.0, -2.0, -2.0], k=3)
    assert flat["ndcg@k"] == pytest.approx(1.0) and flat["kendall"] == 0.0 and flat["spearman"] == 0.0
    assert softmax_gains([0.0, 0.0]).tolist() == [0.5, 0.5]
    assert softmax_gains([1000.0, 0.0]).sum() == pytest.approx(1.0)  # stable at large values
    assert ndcg_at_k([0.0, 1.0], 2) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k([0.0, 0.0], 2) == 1.0
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    v = [0.0, 1.0] * 20
    a, b = bootstrap_mean(v, 500, seed=3), bootstrap_mean(v, 500, seed=3)
    assert a == b and a["n"] == 40 and a["mean"] == 0.5
    assert a["ci95"][0] < 0.5 < a["ci95"][1]
    assert bootstrap_mean([2.0] * 5)["ci95"] == [2.0, 2.0]
    records = [
        {"metrics": {"ndcg@k": 1.0, "top1_differs": 0.0}},
        {"metrics": {"ndcg@k": 0.5, "top1_differs": 1.0}},
    ]
    agg = aggregate(records)
    assert set(agg) == {"ndcg@k", "top1_differs"} and agg["ndcg@k"]["mean"] == 0.75


@pytest.fixture(scope="module")
def smoke():
    from joint_rag.config import build

    cli = build([SMOKE])
    system, data = cli.model.system, cli.datamodule.data
    system.attach_corpus(data.corpus)
    return system, data


def test_loglik_is_the_generator_answer_likelihood_given_the_passage_alone(smoke):
    system, data = smoke
    examples = data.val[:3]
    ids = [row for row, _ in system.rank([e.query for e in examples], None, 4)]
    ll = passage_logliks(system, examples, ids, batch_size=5, show_progress=False)
    b, c = 1, 2
    with torch.no_grad():
        system.eval()
        direct = system.generator(
            [examples[b].query], [examples[b].answer], memory=system.memory_of([ids[b][c]]).unsqueeze(1)
        )
    assert ll[b][c] == pytest.approx(float(direct.token_logprobs.sum()), abs=1e-3)


def test_usefulness_gap_returns_aggregates_and_records(smoke):
    system, data = smoke
    out = usefulness_gap(system, data.val[:5], num_candidates=4, k=3, resamples=200, show_progress=False)
    assert out["questions"] == 5 and out["candidates"] == 4 and out["k"] == 3
    assert len(out["per_question"]) == 5
    rec = out["per_question"][0]
    assert len(rec["candidate_ids"]) == len(rec["loglik"]) == len(rec["similarity"]) == 4
    assert rec["similarity"] == sorted(rec["similarity"], reverse=True)  # similarity order
    for name in ("ndcg@k", "top1_differs", "loglik_gain", "spearman", "gold_most_useful"):
        m = out["metrics"][name]
        assert m["n"] == 5 and m["ci95"][0] <= m["mean"] <= m["ci95"][1]


def test_bad_inputs_are_value_errors(smoke):
    system, data = smoke
    no_answer = [Example(query="Who?", answers=[], gold_passage_ids=[], example_id="q0")]
    with pytest.raises(ValueError, match="no answer .*'q0'.*needs data with answers"):
        usefulness_gap(system, no_answer, num_candidates=4)
    with pytest.raises(ValueError, match="larger than the corpus"):
        usefulness_gap(system, data.val[:2], num_candidates=len(data.corpus) + 1)
    with pytest.raises(ValueError, match="at least 2"):
        usefulness_gap(system, data.val[:2], num_candidates=1)


def test_command_end_to_end_writes_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JRAG_PROGRESS", "0")
    out = tmp_path / "gap.json"
    args = [
        "gap",
        "-c",
        SMOKE,
        "--questions",
        "6",
        "--candidates",
        "4",
        "--bootstrap",
        "100",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "ndcg@4" in printed and "top1_differs" in printed
    result = json.loads(out.read_text())
    assert result["questions"] == 6 and len(result["per_question"]) == 6
    assert result["configs"] == [SMOKE] and result["wall_s"] > 0 and "cpu" in result["machine"]
    assert set(result["metrics"]) >= {"ndcg@k", "top1_differs", "loglik_gain", "kendall"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--candidates", "1000"], "candidates C=1000 is larger than the corpus (48 passages)"),
        (["--questions", "0"], "--questions must be >= 1"),
        ([], "pass either --config"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, capsys, monkeypatch):
    monkeypatch.setenv("JRAG_PROGRESS", "0")
    config = ["-c", SMOKE] if args else []
    with pytest.raises(SystemExit) as exit_info:
        main(["gap", *config, *args])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("jrag gap: error: ") and message in last


def test_command_reads_an_export_and_its_data(tmp_path, capsys, monkeypatch):
    from joint_rag.export import export_untrained

    monkeypatch.setenv("JRAG_PROGRESS", "0")
    folder = export_untrained([SMOKE], tmp_path / "export")
    out = tmp_path / "gap.json"
    assert (
        main(["gap", "--model", str(folder), "--questions", "3", "--candidates", "4", "--out", str(out)]) == 0
    )
    result = json.loads(out.read_text())
    assert result["model"] == str(folder) and result["questions"] == 3 and result["corpus_size"] == 48
