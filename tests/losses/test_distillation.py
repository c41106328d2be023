"""PDist, EMDR2 and REPLUG LSR against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from joint_rag.losses import EMDR2, LMSupervisedRetrieval, ObjectiveInputs, PerplexityDistillation

LN3 = math.log(3.0)


def _inputs(scores: list[float], loglik: list[float], **kw) -> ObjectiveInputs:
    s = torch.tensor([scores])  # (1, K)
    k = s.shape[1]
    return ObjectiveInputs(
        scores=s,
        gold=torch.zeros(1, k, dtype=torch.bool),
        selected=torch.arange(k)[None],
        passage_loglik=torch.tensor([loglik]),
        **kw,
    )


def test_pdist_hand_value() -> None:
    # teacher softmax(ln 0.2, ln 0.6) = (1/4, 3/4); retriever (1/2, 1/2)
    # KL(teacher || ret) = 1/4 ln(1/2) + 3/4 ln(3/2)
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    out = PerplexityDistillation()(_inputs([0.0, 0.0], [math.log(0.2), math.log(0.6)]))
    assert set(out) == {"pdist_kl"}
    assert out["pdist_kl"].item() == pytest.approx(expected, abs=1e-6)


def test_pdist_temperatures() -> None:
    # loglik (2 ln .2, 2 ln .6) / tau_gen=2 -> teacher (1/4, 3/4);
    # scores (0, 0.5 ln 3) / tau_ret=0.5 -> retriever (1/4, 3/4): KL = 0
    obj = PerplexityDistillation(retriever_temperature=0.5, generator_temperature=2.0)
    out = obj(_inputs([0.0, 0.5 * LN3], [2 * math.log(0.2), 2 * math.log(0.6)]))
    assert out["pdist_kl"].item() == pytest.approx(0.0, abs=1e-6)


def test_pdist_length_normalize() -> None:
    # two answer tokens: (2 ln .2, 2 ln .6) / 2 = (ln .2, ln .6) -> teacher (1/4, 3/4)
    mask = torch.tensor([[True, True, False]])
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    obj = PerplexityDistillation(length_normalize=True)
    out = obj(_inputs([0.0, 0.0], [2 * math.log(0.2), 2 * math.log(0.6)], token_mask=mask))
    assert out["pdist_kl"].item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="token_mask"):
        obj(_inputs([0.0, 0.0], [0.0, 0.0]))


def test_emdr2_hand_value() -> None:
    # p_ret (1/4, 3/4), p(y|z) (0.2, 0.6): -ln(0.05 + 0.45) = ln 2; with tau=2 on doubled scores too
    out = EMDR2()(_inputs([0.0, LN3], [math.log(0.2), math.log(0.6)]))
    assert out["emdr2_nll"].item() == pytest.approx(math.log(2.0), abs=1e-6)
    out = EMDR2(temperature=2.0)(_inputs([0.0, 2 * LN3], [math.log(0.2), math.log(0.6)]))
    assert out["emdr2_nll"].item() == pytest.approx(math.log(2.0), abs=1e-6)


def test_lsr_hand_value_and_direction() -> None:
    # P_ret = (1/2, 1/2), Q_LM = (1/4, 3/4): KL(P || Q) = 1/2 ln 2 + 1/2 ln(2/3)
    inputs = _inputs([0.0, 0.0], [math.log(0.2), math.log(0.6)])
    lsr = LMSupervisedRetrieval()(inputs)["lsr_kl"].item()
    assert lsr == pytest.approx(0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0), abs=1e-6)
    # PDist on the same inputs is the other direction, KL(Q || P): a different number
    pdist = PerplexityDistillation()(inputs)["pdist_kl"].item()
    assert pdist == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-6)
    assert abs(lsr - pdist) > 1e-3


def test_lsr_own_temperatures() -> None:
    # gamma=0.5: scores (0, 0.5 ln 3) -> P = (1/4, 3/4); beta=2: loglik (2 ln .6, 2 ln .2) -> Q = (3/4, 1/4)
    # KL(P || Q) = 1/4 ln(1/3) + 3/4 ln 3 = 1/2 ln 3
    obj = LMSupervisedRetrieval(retriever_temperature=0.5, lm_temperature=2.0)
    out = obj(_inputs([0.0, 0.5 * LN3], [2 * math.log(0.6), 2 * math.log(0.2)]))
    assert out["lsr_kl"].item() == pytest.approx(0.5 * LN3, abs=1e-6)


def test_distillation_config_errors() -> None:
    assert PerplexityDistillation.needs == EMDR2.needs == LMSupervisedRetrieval.needs == {"passage_loglik"}
    with pytest.raises(ValueError, match="lm_temperature"):
        LMSupervisedRetrieval(lm_temperature=-1.0)
    with pytest.raises(ValueError, match="passage_loglik"):
        EMDR2()(ObjectiveInputs(scores=torch.zeros(1, 2), gold=torch.zeros(1, 2, dtype=torch.bool)))
