"""CombinedObjective: weighted sum of named terms."""

from __future__ import annotations

import math

import pytest
import torch

from joint_rag.losses import CombinedObjective, EndToEnd, ObjectiveInputs, RAGSequence, Similarity


def _inputs() -> ObjectiveInputs:
    return ObjectiveInputs(
        scores=torch.log(torch.tensor([[1.0, 3.0]])).requires_grad_(True),  # p_ret (1/4, 3/4)
        gold=torch.tensor([[True, False]]),
        selected=torch.tensor([[0, 1]]),
        answer_nll=torch.tensor([2.0, 4.0]),  # mean 3
        passage_loglik=torch.log(torch.tensor([[0.2, 0.6]])),  # marginal 0.5
    )


def test_weighted_sum() -> None:
    combined = CombinedObjective(
        {"e2e": EndToEnd(), "sim": Similarity(temperature=1.0), "rag": RAGSequence()},
        weights={"e2e": 2.0, "sim": 0.5},  # rag defaults to 1
    )
    total, terms = combined(_inputs())
    # e2e 3; sim -ln(1/4) = ln 4; rag ln 2
    assert set(terms) == {"e2e/answer_nll", "sim/info_nce", "rag/marginal_nll"}
    assert terms["sim/info_nce"].item() == pytest.approx(math.log(4.0), abs=1e-6)
    expected = 2.0 * 3.0 + 0.5 * math.log(4.0) + 1.0 * math.log(2.0)
    assert total.item() == pytest.approx(expected, abs=1e-6)
    assert all(not t.requires_grad for t in terms.values())  # logged terms are detached
    assert total.requires_grad


def test_zero_weight_is_skipped_and_not_needed() -> None:
    combined = CombinedObjective({"e2e": EndToEnd(), "rag": RAGSequence()}, weights={"rag": 0.0})
    assert combined.needs == frozenset({"answer_nll"})
    total, terms = combined(_inputs())
    assert set(terms) == {"e2e/answer_nll"}
    assert total.item() == pytest.approx(3.0)


def test_unknown_weight_name_rejected() -> None:
    with pytest.raises(ValueError, match="unknown objectives.*'simm'"):
        CombinedObjective({"sim": Similarity()}, weights={"simm": 1.0})
