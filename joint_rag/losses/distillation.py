"""Usefulness objectives, distilled: the generator is a DETACHED teacher for the retriever.

The retriever side is a distribution over the K selected candidates, P_ret = softmax(s / tau).
The teacher comes from the generator's per-passage answer log-likelihood
`passage_loglik[b, k] = log p(y | x, z_k)`, always detached here: these objectives train the
retriever only and send no gradient into the generator.

    PerplexityDistillation (Atlas PDist):  KL(P_gen || P_ret),  P_gen = softmax(loglik / tau_gen)
    EMDR2:                                 -log sum_k stopgrad(p(y | x, z_k)) P_ret(z_k | x)
    LMSupervisedRetrieval (REPLUG LSR):    KL(P_ret || Q_LM),   Q_LM = softmax(loglik / beta)

KL direction: PDist puts the teacher first (forward KL, mass-covering: the retriever must give
probability to every passage the generator likes); LSR puts the retriever first, as REPLUG
writes it (reverse KL, mode-seeking: the retriever is pushed off passages the LM dislikes and
may concentrate on one good passage). Losses are per-query sums over K, averaged over the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from joint_rag.losses.base import Objective, ObjectiveInputs
from joint_rag.losses.marginal import selected_scores_and_loglik


def kl_from_log_probs(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) over the last dim, from log-probabilities.

    Args:
        log_p: (B, K) log p (rows normalised).
        log_q: (B, K) log q (rows normalised).

    Returns:
        (B,) sum_k p_k (log p_k - log q_k); entries with p_k = 0 contribute 0.
    """
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (B,)


def per_token_loglik(passage_loglik: Tensor, token_mask: Tensor) -> Tensor:
    """Length-normalised log-likelihood: loglik divided by the number of answer tokens.

    Args:
        passage_loglik: (B, K) log p(y | x, z_k) summed over answer tokens.
        token_mask: (B, T) bool answer tokens (the same answer for every passage).

    Returns:
        (B, K) mean log-probability per answer token.
    """
    n_tokens = token_mask.sum(dim=-1).clamp(min=1).to(passage_loglik.dtype)  # (B,)
    return passage_loglik / n_tokens[:, None]  # (B, K)


def perplexity_distillation_kl(
    scores: Tensor,
    passage_loglik: Tensor,
    retriever_temperature: float = 1.0,
    generator_temperature: float = 1.0,
) -> Tensor:
    """Atlas PDist, per query: KL(softmax(stopgrad(loglik) / tau_gen) || softmax(scores / tau_ret)).

    Args:
        scores: (B, K) retriever scores of the selected passages.
        passage_loglik: (B, K) teacher log-likelihoods (detached here).
        retriever_temperature: tau_ret.
        generator_temperature: tau_gen.

    Returns:
        (B,) KL(P_gen || P_ret).
    """
    log_target = torch.log_softmax(passage_loglik.detach() / generator_temperature, dim=-1)  # (B, K)
    log_ret = torch.log_softmax(scores / retriever_temperature, dim=-1)  # (B, K)
    return kl_from_log_probs(log_target, log_ret)  # (B,)


def emdr2_nll(scores: Tensor, passage_loglik: Tensor, temperature: float = 1.0) -> Tensor:
    """EMDR2, per query: -log sum_k stopgrad(p(y | x, z_k)) softmax(scores / tau)_k.

    Args:
        scores: (B, K) retriever scores of the selected passages.
        passage_loglik: (B, K) log p(y | x, z_k) (detached here).
        temperature: retriever softmax temperature tau.

    Returns:
        (B,) -logsumexp(stopgrad(loglik) + log_softmax(scores / tau)).
    """
    log_ret = torch.log_softmax(scores / temperature, dim=-1)  # (B, K)
    return -torch.logsumexp(passage_loglik.detach() + log_ret, dim=-1)  # (B,)


def lm_supervised_kl(
    scores: Tensor, passage_loglik: Tensor, retriever_temperature: float = 1.0, lm_temperature: float = 1.0
) -> Tensor:
    """REPLUG LSR, per query: KL(softmax(scores / gamma) || softmax(stopgrad(loglik) / beta)).

    Args:
        scores: (B, K) retriever scores of the selected passages.
        passage_loglik: (B, K) LM log-likelihoods (detached here).
        retriever_temperature: gamma.
        lm_temperature: beta.

    Returns:
        (B,) KL(P_ret || Q_LM).
    """
    log_ret = torch.log_softmax(scores / retriever_temperature, dim=-1)  # (B, K)
    log_lm = torch.log_softmax(passage_loglik.detach() / lm_temperature, dim=-1)  # (B, K)
    return kl_from_log_probs(log_ret, log_lm)  # (B,)


def _positive(owner: str, name: str, value: float) -> float:
    if value <= 0:
        raise ValueError(f"{owner}.{name} must be > 0, got {value}")
    return float(value)


class PerplexityDistillation(Objective):
    """Atlas perplexity distillation (PDist).

        P_gen = softmax(stopgrad(loglik) / tau_gen),  P_ret = softmax(s / tau_ret)
        L = mean_b KL(P_gen || P_ret) = mean_b sum_k P_gen,k (log P_gen,k - log P_ret,k)

    Teacher first (forward KL); compare `LMSupervisedRetrieval`, which uses the reverse.
    `loglik` is the summed answer log-likelihood, as in the paper's p_LM(a | d_k, q); with
    `length_normalize=True` it is divided by the number of answer tokens (`token_mask`), which
    is what Atlas's reference code does (`perplexity_score`: -sum token loss / #tokens).
    Atlas's code averages KLDivLoss over all B*K entries; here it is summed over K, averaged
    over B (a true KL). Source: Izacard et al. 2022, "Atlas: Few-shot Learning with Retrieval
    Augmented Language Models", sec. 2.2.

    Args:
        retriever_temperature: tau_ret, temperature of the retriever softmax.
        generator_temperature: tau_gen, temperature of the teacher softmax.
        length_normalize: divide loglik by the number of answer tokens (needs `token_mask`).
    """

    needs = frozenset({"passage_loglik"})

    def __init__(
        self,
        retriever_temperature: float = 1.0,
        generator_temperature: float = 1.0,
        length_normalize: bool = False,
    ) -> None:
        super().__init__()
        self.retriever_temperature = _positive(
            "PerplexityDistillation", "retriever_temperature", retriever_temperature
        )
        self.generator_temperature = _positive(
            "PerplexityDistillation", "generator_temperature", generator_temperature
        )
        self.length_normalize = length_normalize

    def forward(self, inputs: ObjectiveInputs) -> dict[str, Tensor]:
        scores, loglik = selected_scores_and_loglik(inputs, "PerplexityDistillation")  # (B, K), (B, K)
        if self.length_normalize:
            if inputs.token_mask is None:
                raise ValueError(
                    "PerplexityDistillation(length_normalize=True) needs inputs.token_mask (B, T) to count "
                    "answer tokens; set length_normalize: false or provide token_mask"
                )
            loglik = per_token_loglik(loglik, inputs.token_mask.bool())  # (B, K)
        kl = perplexity_distillation_kl(
            scores, loglik, self.retriever_temperature, self.generator_temperature
        )
        return {"pdist_kl": kl.mean()}


class EMDR2(Objective):
    """EMDR2: end-to-end training of multi-document readers and retrievers, retriever term.

        L = - mean_b log sum_k stopgrad(p(y | x, z_k)) softmax(s_b / tau)_k
          = - mean_b logsumexp_k(stopgrad(loglik_bk) + log_softmax(s_b / tau)_k)

    Like RAG-Sequence, but the generator likelihood is a fixed (detached) teacher, so only the
    retriever is trained. Its gradient w.r.t. s_k is (P_ret,k - posterior_k) / tau with
    posterior proportional to P_ret,k p(y | x, z_k): passages that explain the answer better
    than the prior says gain probability. This is the sequence-level form (Sachan et al.);
    Atlas's "emdr" mode applies the same formula per answer token. Source: Sachan et al. 2021,
    "End-to-End Training of Multi-Document Reader and Retriever for Open-Domain Question
    Answering" (EMDR2), as used in Atlas (Izacard et al. 2022).

    Args:
        temperature: tau, temperature of the retriever softmax.
    """

    needs = frozenset({"passage_loglik"})

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = _positive("EMDR2", "temperature", temperature)

    def forward(self, inputs: ObjectiveInputs) -> dict[str, Tensor]:
        scores, loglik = selected_scores_and_loglik(inputs, "EMDR2")  # (B, K), (B, K)
        return {"emdr2_nll": emdr2_nll(scores, loglik, self.temperature).mean()}


class LMSupervisedRetrieval(Objective):
    """REPLUG LM-supervised retrieval (LSR).

        P_ret = softmax(s / gamma),  Q_LM = softmax(stopgrad(loglik) / beta)
        L = mean_b KL(P_ret || Q_LM) = mean_b sum_k P_ret,k (log P_ret,k - log Q_LM,k)

    Retriever first (reverse, mode-seeking KL), the direction REPLUG states; PDist uses the
    forward KL(teacher || retriever). REPLUG's equation writes the LM probability
    P_LM(y | d, x) in the exponent of Q; here, as in common implementations, the
    log-likelihood is the logit. gamma and beta are separate temperatures.
    Source: Shi et al. 2023, "REPLUG: Retrieval-Augmented Black-Box Language Models", sec. 4.

    Args:
        retriever_temperature: gamma, temperature of the retriever softmax.
        lm_temperature: beta, temperature of the LM softmax.
    """

    needs = frozenset({"passage_loglik"})

    def __init__(self, retriever_temperature: float = 1.0, lm_temperature: float = 1.0) -> None:
        super().__init__()
        self.retriever_temperature = _positive(
            "LMSupervisedRetrieval", "retriever_temperature", retriever_temperature
        )
        self.lm_temperature = _positive("LMSupervisedRetrieval", "lm_temperature", lm_temperature)

    def forward(self, inputs: ObjectiveInputs) -> dict[str, Tensor]:
        scores, loglik = selected_scores_and_loglik(inputs, "LMSupervisedRetrieval")  # (B, K), (B, K)
        kl = lm_supervised_kl(scores, loglik, self.retriever_temperature, self.lm_temperature)  # (B,)
        return {"lsr_kl": kl.mean()}
