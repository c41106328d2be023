"""InfoNCE against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from joint_rag.losses import ObjectiveInputs, Similarity, info_nce

# exp(scores) = (1, 3, 4): denominator 8
SCORES = torch.log(torch.tensor([[1.0, 3.0, 4.0]]))


def test_single_positive() -> None:
    gold = torch.tensor([[True, False, False]])
    assert info_nce(SCORES, gold, 1.0).item() == pytest.approx(math.log(8.0), abs=1e-6)


def test_several_positives_and_temperature() -> None:
    # positives 1 and 3 of 8 -> -ln(4/8); scores scaled by tau cancel the temperature
    gold = torch.tensor([[True, True, False]])
    assert info_nce(SCORES * 0.05, gold, 0.05).item() == pytest.approx(math.log(2.0), abs=1e-5)


def test_rows_without_positive_are_skipped() -> None:
    scores = torch.cat([SCORES, torch.zeros(1, 3)])  # (2, 3)
    gold = torch.tensor([[True, False, False], [False, False, False]])
    assert info_nce(scores, gold, 1.0).item() == pytest.approx(math.log(8.0), abs=1e-6)
    none = info_nce(scores.requires_grad_(True), torch.zeros(2, 3, dtype=torch.bool), 1.0)
    assert none.item() == 0.0
    none.backward()  # still part of the graph


def test_objective_prefers_inbatch_scores() -> None:
    # own candidates: gold first of (1, 3, 4) -> ln 8; in-batch: gold first of (1, 1) -> ln 2
    inputs = ObjectiveInputs(
        scores=SCORES,
        gold=torch.tensor([[True, False, False]]),
        inbatch_scores=torch.zeros(1, 2),
        inbatch_gold=torch.tensor([[True, False]]),
    )
    assert Similarity(temperature=1.0)(inputs)["info_nce"].item() == pytest.approx(math.log(2.0), abs=1e-6)
    own = Similarity(temperature=1.0, in_batch=False)(inputs)["info_nce"]
    assert own.item() == pytest.approx(math.log(8.0), abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        Similarity(temperature=0.0)
