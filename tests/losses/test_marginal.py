"""RAG-Sequence / RAG-Token against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from joint_rag.losses import ObjectiveInputs, RAGSequence, RAGToken
from joint_rag.losses.marginal import rag_sequence_nll, rag_token_nll

LN3 = math.log(3.0)


def _inputs(**kw) -> ObjectiveInputs:
    # C = 3 candidates, the top-k picked candidates 2 and 0: selected scores (0, ln 3),
    # so p_ret = (1/4, 3/4) at temperature 1; candidate 1 is not selected.
    scores = torch.tensor([[LN3, 5.0, 0.0]], requires_grad=True)  # (1, 3)
    selected = torch.tensor([[2, 0]])  # (1, 2)
    return ObjectiveInputs(scores=scores, gold=torch.zeros(1, 3, dtype=torch.bool), selected=selected, **kw)


def test_rag_sequence_hand_value() -> None:
    # p(y|z) = (0.2, 0.6): marginal = 1/4 * 0.2 + 3/4 * 0.6 = 0.5, so L = ln 2
    loglik = torch.log(torch.tensor([[0.2, 0.6]]))  # (1, 2)
    out = RAGSequence()(_inputs(passage_loglik=loglik))
    assert set(out) == {"marginal_nll"}
    assert out["marginal_nll"].item() == pytest.approx(math.log(2.0), abs=1e-6)


def test_rag_sequence_temperature_and_batch_mean() -> None:
    # row 0: scores (0, 2 ln 3) / tau=2 -> p_ret (1/4, 3/4), lik (0.2, 0.6): L = ln 2
    # row 1: scores (0, 0) -> (1/2, 1/2), lik (0.1, 0.3): marginal 0.2, L = ln 5
    scores = torch.tensor([[0.0, 2 * LN3], [0.0, 0.0]])
    loglik = torch.log(torch.tensor([[0.2, 0.6], [0.1, 0.3]]))
    per_row = rag_sequence_nll(scores, loglik, temperature=2.0)
    torch.testing.assert_close(per_row, torch.tensor([math.log(2.0), math.log(5.0)]))


def test_rag_token_hand_value_and_mask() -> None:
    # per-token probs, passage a: (0.2, 0.8, pad), passage b: (0.6, 0.4, pad), p_ret (1/4, 3/4)
    # t0: 0.05 + 0.45 = 0.5; t1: 0.2 + 0.3 = 0.5; t2 masked. L = 2 ln 2
    probs = torch.tensor([[[0.2, 0.8, 1.0], [0.6, 0.4, 1.0]]])  # (1, 2, 3)
    logprobs = probs.log()
    logprobs[..., 2] = float("-inf")  # padding may hold anything
    logprobs.requires_grad_(True)
    mask = torch.tensor([[True, True, False]])  # (1, 3)
    inputs = _inputs(token_logprobs=logprobs, token_mask=mask)
    loss = RAGToken()(inputs)["marginal_nll"]
    assert loss.item() == pytest.approx(2 * math.log(2.0), abs=1e-6)
    loss.backward()
    assert torch.isfinite(logprobs.grad).all()
    assert (logprobs.grad[..., 2] == 0).all()  # masked tokens get no gradient
    assert torch.isfinite(inputs.scores.grad).all()


def test_rag_token_masked_values_do_not_matter() -> None:
    scores = torch.tensor([[0.3, -0.2]])
    logprobs = torch.randn(1, 2, 4).log_softmax(-1)
    mask = torch.tensor([[True, True, True, False]])
    other = logprobs.clone()
    other[..., 3] = -123.0
    a = rag_token_nll(scores, logprobs, mask)
    b = rag_token_nll(scores, other, mask)
    torch.testing.assert_close(a, b)
    # and equals the unmasked loss on the first three tokens
    torch.testing.assert_close(a, rag_token_nll(scores, logprobs[..., :3], None))


def test_rag_token_one_token_equals_rag_sequence() -> None:
    scores = torch.randn(3, 4)
    loglik = torch.randn(3, 4) - 2.0
    torch.testing.assert_close(rag_token_nll(scores, loglik[..., None]), rag_sequence_nll(scores, loglik))


def test_marginal_errors_name_the_missing_signal() -> None:
    with pytest.raises(ValueError, match="passage_loglik"):
        RAGSequence()(_inputs())
    with pytest.raises(ValueError, match="token_logprobs"):
        RAGToken()(_inputs())
    with pytest.raises(ValueError, match="aligned to `selected`"):
        RAGSequence()(_inputs(passage_loglik=torch.zeros(1, 3)))
    with pytest.raises(ValueError, match="temperature"):
        RAGSequence(temperature=0.0)
    assert RAGSequence.needs == frozenset({"passage_loglik"})
    assert RAGToken.needs == frozenset({"token_logprobs"})
