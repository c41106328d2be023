"""Properties shared by the usefulness objectives (EndToEnd excluded: it needs the generator).

- one SGD step on the retriever scores raises the probability of the passage with the higher
  answer likelihood, under every objective;
- marginal objectives send gradient into the generator signal, distilled ones do not;
- every term is finite (with finite gradients) on extreme but -inf-free inputs.
"""

from __future__ import annotations

import math

import pytest
import torch

from joint_rag.losses import (
    EMDR2,
    LMSupervisedRetrieval,
    Objective,
    ObjectiveInputs,
    PerplexityDistillation,
    RAGSequence,
    RAGToken,
)

MARGINAL = [RAGSequence, RAGToken]
DISTILLED = [PerplexityDistillation, EMDR2, LMSupervisedRetrieval]
USEFULNESS = MARGINAL + DISTILLED


def _inputs(scores: torch.Tensor, loglik: torch.Tensor, token_logprobs: torch.Tensor) -> ObjectiveInputs:
    b, k = loglik.shape
    return ObjectiveInputs(
        scores=scores,
        gold=torch.zeros_like(scores, dtype=torch.bool),
        selected=torch.arange(k).expand(b, k),
        passage_loglik=loglik,
        token_logprobs=token_logprobs,
        token_mask=torch.ones(b, token_logprobs.shape[-1], dtype=torch.bool),
    )


def _two_passages(requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    # passage 1 explains the answer better on every token: per-token probs (0.3, 0.4) vs (0.7, 0.8)
    token_logprobs = torch.log(torch.tensor([[[0.3, 0.4], [0.7, 0.8]]]))  # (1, 2, 2)
    loglik = token_logprobs.sum(-1)  # (1, 2)
    return loglik.requires_grad_(requires_grad), token_logprobs.requires_grad_(requires_grad)


@pytest.mark.parametrize(
    "start", [[0.0, 0.0], [1.5, 0.0], [0.0, 1.5]], ids=["tie", "worse-first", "better-first"]
)
@pytest.mark.parametrize("cls", USEFULNESS, ids=lambda c: c.__name__)
def test_sgd_step_favours_the_useful_passage(cls: type[Objective], start: list[float]) -> None:
    scores = torch.tensor([start], requires_grad=True)  # (1, 2)
    loglik, token_logprobs = _two_passages()
    before = scores.softmax(-1)[0, 1].item()
    cls()(_inputs(scores, loglik, token_logprobs)).popitem()[1].backward()
    with torch.no_grad():
        after = (scores - 0.5 * scores.grad).softmax(-1)[0, 1].item()
    assert after > before


@pytest.mark.parametrize("cls", MARGINAL, ids=lambda c: c.__name__)
def test_marginal_objectives_train_the_generator(cls: type[Objective]) -> None:
    scores = torch.zeros(1, 2, requires_grad=True)
    loglik, token_logprobs = _two_passages(requires_grad=True)
    cls()(_inputs(scores, loglik, token_logprobs)).popitem()[1].backward()
    signal = loglik if cls is RAGSequence else token_logprobs
    assert signal.grad is not None and signal.grad.abs().sum() > 0
    # raising any passage's answer likelihood lowers the marginal NLL
    assert (signal.grad < 0).all()


@pytest.mark.parametrize("cls", DISTILLED, ids=lambda c: c.__name__)
def test_distilled_objectives_do_not_train_the_generator(cls: type[Objective]) -> None:
    scores = torch.zeros(1, 2, requires_grad=True)
    loglik, token_logprobs = _two_passages(requires_grad=True)
    cls()(_inputs(scores, loglik, token_logprobs)).popitem()[1].backward()
    assert loglik.grad is None or (loglik.grad == 0).all()
    assert scores.grad is not None and scores.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", USEFULNESS, ids=lambda c: c.__name__)
def test_gradient_reaches_only_selected_candidates(cls: type[Objective]) -> None:
    # C = 3 candidates, K = 2 selected (2 and 0): candidate 1 gets no gradient
    scores = torch.tensor([[0.2, 9.0, -0.4]], requires_grad=True)
    loglik, token_logprobs = _two_passages()
    inputs = _inputs(scores, loglik, token_logprobs)
    inputs.selected = torch.tensor([[2, 0]])
    cls()(inputs).popitem()[1].backward()
    assert scores.grad[0, 1] == 0
    assert scores.grad[0, [0, 2]].abs().sum() > 0


@pytest.mark.parametrize("cls", USEFULNESS, ids=lambda c: c.__name__)
def test_terms_finite_on_extreme_inputs(cls: type[Objective]) -> None:
    torch.manual_seed(0)
    b, k, t = 3, 4, 5
    scores = (torch.randn(b, k) * 80.0).requires_grad_(True)  # far-apart scores
    token_logprobs = (-torch.rand(b, k, t) * 400.0).requires_grad_(True)  # likelihoods ~ e^-2000
    loglik = token_logprobs.detach().sum(-1).requires_grad_(True)  # (B, K)
    for value in cls()(_inputs(scores, loglik, token_logprobs)).values():
        assert value.dim() == 0 and math.isfinite(value.item())
        value.backward()
    assert torch.isfinite(scores.grad).all()
