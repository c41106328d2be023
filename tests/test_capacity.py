"""The free-embedding capacity experiment (``joint_rag.capacity``, ``jrag capacity``)."""

from __future__ import annotations

import json

import pytest
import torch

from joint_rag import capacity
from joint_rag.capacity import Settings, critical_n, limit_fit, pair_loss, solved_queries, try_n
from joint_rag.cli import main


def test_solved_means_both_documents_above_every_other():
    pairs = torch.tensor([[0, 1], [1, 2]])
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.7], [0.9, 0.8, 0.85, 0.1]])
    assert solved_queries(scores, pairs).tolist() == [True, False]  # doc 0 beats the second's pair
    tie = torch.tensor([[0.9, 0.7, 0.7, 0.1]])
    assert solved_queries(tie, torch.tensor([[0, 1]])).tolist() == [False]  # strictly above


def test_pair_loss_leaves_the_other_positive_out():
    scores = torch.tensor([[2.0, 2.0, 0.0]])
    pairs = torch.tensor([[0, 1]])
    # each positive against the one negative: -log(e^2 / (e^2 + e^0))
    expected = -torch.log(torch.exp(torch.tensor(2.0)) / (torch.exp(torch.tensor(2.0)) + 1))
    assert pair_loss(scores, pairs, 1.0) == pytest.approx(float(expected))


def test_small_cases_solve_or_fail_as_geometry_says():
    fast = Settings(max_steps=1500, patience=6)
    assert try_n(4, 8, settings=fast).solved  # 6 pairs of 4 documents in 8 dimensions
    # on the circle (d = 2) the two "opposite" pairs of 4 documents cannot both be top-2 sets
    assert not try_n(4, 2, settings=fast).solved
    assert try_n(6, 8, 2, "maxsim", fast).queries == 15
    with pytest.raises(ValueError, match="not divisible by M = 3"):
        try_n(4, 8, 3, "maxsim")
    with pytest.raises(ValueError, match="cosine is single-vector"):
        try_n(4, 8, 2, "cosine")


def test_critical_n_gallops_then_bisects(monkeypatch):
    seen = []

    def fake(n, d, vectors, similarity, settings):
        seen.append(n)
        return capacity.Trial(n, n <= 11, 0, 0, 0, 0.0)

    monkeypatch.setattr(capacity, "try_n", fake)
    result = critical_n(8)
    assert result["critical_n"] == 11 and seen == [4, 8, 16, 12, 10, 11]
    assert result["limit_fit"] == pytest.approx(limit_fit(8)) and not result["capped"]
    assert critical_n(8, n_max=8)["capped"]


def test_jrag_capacity_writes_json(tmp_path, capsys):
    out = tmp_path / "cap.json"
    args = [
        "capacity",
        "--dims",
        "2",
        "--similarity",
        "cosine",
        "maxsim",
        "--vectors",
        "1",
        "2",
        "--max-steps",
        "300",
    ]
    assert main([*args, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(r["similarity"], r["vectors"], r["d"]) for r in result["results"]] == [
        ("cosine", 1, 2),
        ("maxsim", 2, 2),
    ]
    assert result["settings"]["lr"] == 0.01 and "cpu" in result["machine"]
    assert "critical n" in capsys.readouterr().out
    png = tmp_path / "cap.png"
    assert main(["capacity", "--from", str(out), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
