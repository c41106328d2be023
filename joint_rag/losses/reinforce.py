"""Reinforcement objective: the retriever is a Plackett-Luce policy over its candidates, rewarded
by a downstream metric of the K passages it draws.

For each query the retriever's scores s (B, C) define the Plackett-Luce (PL) distribution over
ordered K-sequences z = (i_1, ..., i_K) of distinct candidates, with logits l = s / tau:

    log P(z) = sum_j [ l_{i_j} - logsumexp_{c not in {i_1..i_{j-1}}} l_c ]

G sequences per query are drawn by Gumbel-top-k (the K largest of l + Gumbel(0, 1) noise, in
descending order, is an exact PL sample without replacement; Kool et al. 2019). Each is rewarded
with R(z) (detached), and the score-function (REINFORCE) loss is

    L_pg = - mean_{b, g} A_bg * log P(z_bg),      A_bg = R_bg - baseline_bg

whose gradient w.r.t. s is an unbiased estimate of -grad E_{z ~ PL(s / tau)}[R(z)] whenever the
baseline of sample g does not depend on z_bg. The estimator is written for ordered sequences;
a set reward (one that ignores the order, e.g. the generator reading the K passages as a set)
is a special case of a sequence reward, and E over sequences of R equals E over sets of R, so
the same estimator is unbiased for the gradient of the expected set reward too.

Baselines (per query, over its G samples):

    "leave_one_out"  baseline_bg = mean_{g' != g} R_bg'  (RLOO; unbiased, needs G >= 2)
    "group_mean"     baseline_b  = mean_g R_bg           (GRPO-style; includes the sample
                     itself, so A = (G-1)/G * A_leave_one_out exactly: the gradient is the
                     unbiased one shrunk by (G-1)/G)
    "none"           baseline = 0

``normalize_advantage`` divides A by the group's reward std (+1e-6), as GRPO does: it rescales
each query's gradient by a data-dependent factor, so it is no longer unbiased for grad E[R].

Rewards, all detached (the gradient reaches the retrieval scores only, never the generator):

    "ndcg"    nDCG@K of the sampled order against ``inputs.gold`` (binary relevance; the
              supervised variant; 0 for a query with no gold candidate)
    "loglik"  - the generator's answer NLL (mean per answer token) reading the K passages
    "f1"      token F1 of the generator's greedy answer reading the K passages (max over the
              example's answers)

"loglik" and "f1" are computed by the training module (``inputs.set_reward``, one generator call
over the B*G sampled sets, under no_grad in eval mode).

Optional KL term to a reference retriever, over the C candidates:

    L = L_pg + kl_weight * mean_b KL(softmax(s_b / tau) || softmax(r_b / tau))

where r = ``inputs.reference_scores`` (B, C), detached: the training module fills it from a
frozen snapshot of the retriever (passage and query encoder) taken at the first step that needs
it, i.e. the initial retriever of the joint phase; it is saved with checkpoints.

Returned terms: ``policy_loss`` (and ``kl_penalty`` = kl_weight * KL) are summed into the loss;
``reward_mean`` and ``kl`` are logged only (``logged_terms``).

Sources: Williams 1992 (REINFORCE); Kool, van Hoof, Welling 2019, "Stochastic Beams and Where to
Find Them" (Gumbel-top-k) and "Buy 4 REINFORCE Samples, Get a Baseline for Free!" (RLOO);
Shao et al. 2024, DeepSeekMath (GRPO group baseline).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from joint_rag.losses.base import Objective, ObjectiveInputs
from joint_rag.losses.distillation import kl_from_log_probs

REWARDS = ("loglik", "f1", "ndcg")
BASELINES = ("leave_one_out", "group_mean", "none")


def gumbel_top_k(logits: Tensor, k: int, num_samples: int) -> Tensor:
    """Ordered Plackett-Luce samples without replacement by Gumbel-top-k.

    Args:
        logits: (B, C) PL logits (detached here).
        k: K, sequence length (K <= C).
        num_samples: G, samples per row.

    Returns:
        (B, G, K) long candidate indices, each row's K largest perturbed logits in order.
    """
    B, C = logits.shape
    u = torch.rand(B, num_samples, C, device=logits.device, dtype=torch.float64)
    u = u.clamp(min=torch.finfo(torch.float64).tiny, max=1.0 - 1e-16)
    gumbel = -torch.log(-torch.log(u))  # (B, G, C)
    perturbed = logits.detach().double()[:, None, :] + gumbel  # (B, G, C)
    return perturbed.topk(k, dim=-1).indices  # (B, G, K)


def plackett_luce_log_prob(logits: Tensor, samples: Tensor) -> Tensor:
    """log P(z) of ordered samples under Plackett-Luce(logits), differentiable in ``logits``.

    Args:
        logits: (B, C) PL logits.
        samples: (B, G, K) long distinct candidate indices per sample.

    Returns:
        (B, G) sum_j [ l_{i_j} - logsumexp over the candidates not yet drawn ].
    """
    B, G, K = samples.shape
    C = logits.shape[-1]
    expanded = logits[:, None, :].expand(B, G, C)  # (B, G, C)
    chosen = expanded.gather(-1, samples)  # (B, G, K)
    hard = torch.nn.functional.one_hot(samples, C).bool()  # (B, G, K, C)
    taken_before = (hard.cumsum(dim=2) - hard.long()).bool()  # (B, G, K, C) drawn at an earlier step
    masked = expanded[:, :, None, :].masked_fill(taken_before, float("-inf"))  # (B, G, K, C)
    return (chosen - torch.logsumexp(masked, dim=-1)).sum(-1)  # (B, G)


def ndcg_reward(samples: Tensor, gold: Tensor) -> Tensor:
    """Binary-relevance nDCG@K of each sampled order.

    Args:
        samples: (B, G, K) candidate indices in rank order.
        gold: (B, C) bool gold candidates.

    Returns:
        (B, G) DCG / IDCG with DCG = sum_j gold[i_j] / log2(j + 1), IDCG over min(K, #gold)
        gold passages; 0 where a query has no gold candidate.
    """
    B, G, K = samples.shape
    rel = gold.float()[:, None, :].expand(B, G, -1).gather(-1, samples)  # (B, G, K)
    discount = 1.0 / torch.log2(torch.arange(2, K + 2, device=samples.device, dtype=torch.float32))  # (K,)
    dcg = (rel * discount).sum(-1)  # (B, G)
    n_gold = gold.sum(-1).clamp(max=K)  # (B,)
    idcg = (discount.cumsum(0)[(n_gold - 1).clamp(min=0)]) * (n_gold > 0)  # (B,)
    return torch.where(idcg[:, None] > 0, dcg / idcg.clamp(min=1e-12)[:, None], torch.zeros_like(dcg))


def advantages(rewards: Tensor, baseline: str, normalize: bool) -> Tensor:
    """(B, G) rewards -> (B, G) advantages (see the module docstring)."""
    G = rewards.shape[1]
    if baseline == "leave_one_out":
        adv = rewards - (rewards.sum(1, keepdim=True) - rewards) / (G - 1)
    elif baseline == "group_mean":
        adv = rewards - rewards.mean(1, keepdim=True)
    else:
        adv = rewards
    if normalize:
        adv = adv / (rewards.std(1, unbiased=False, keepdim=True) + 1e-6)
    return adv


class Reinforce(Objective):
    """Score-function (REINFORCE) training of the retrieval scores with a downstream reward.

    See the module docstring for the estimator, baselines, rewards and the KL term.

    Args:
        num_samples: G, sampled K-sequences per query (>= 2 for a group baseline).
        k: K passages per sample (None: the configured selector's K, ``inputs.top_k``).
        temperature: tau, the PL logits are scores / tau.
        reward: "loglik", "f1" or "ndcg".
        baseline: "leave_one_out", "group_mean" or "none".
        kl_weight: weight of KL(P_ret || P_reference) over the C candidates (0: off).
        normalize_advantage: divide advantages by the group's reward std (GRPO).
    """

    logged_terms = frozenset({"reward_mean", "kl"})

    def __init__(
        self,
        num_samples: int = 8,
        k: int | None = None,
        temperature: float = 1.0,
        reward: str = "loglik",
        baseline: str = "leave_one_out",
        kl_weight: float = 0.0,
        normalize_advantage: bool = False,
    ) -> None:
        super().__init__()
        if reward not in REWARDS:
            raise ValueError(f"Reinforce.reward must be one of {list(REWARDS)}, got {reward!r}")
        if baseline not in BASELINES:
            raise ValueError(f"Reinforce.baseline must be one of {list(BASELINES)}, got {baseline!r}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"Reinforce.num_samples must be an integer >= 1, got {num_samples!r}")
        if num_samples < 2 and (baseline != "none" or normalize_advantage):
            raise ValueError(
                f"Reinforce.num_samples must be >= 2 for baseline {baseline!r} or normalize_advantage "
                f"(a group of one sample has no baseline), got {num_samples}; use baseline: none"
            )
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"Reinforce.k must be an integer >= 1 or null, got {k!r}")
        if not temperature > 0:
            raise ValueError(f"Reinforce.temperature must be > 0, got {temperature}")
        if not kl_weight >= 0 or math.isinf(kl_weight):
            raise ValueError(f"Reinforce.kl_weight must be a finite number >= 0, got {kl_weight}")
        self.num_samples = num_samples
        self.k = k
        self.temperature = float(temperature)
        self.reward = reward
        self.baseline = baseline
        self.kl_weight = float(kl_weight)
        self.normalize_advantage = bool(normalize_advantage)
        needs = set() if reward == "ndcg" else {"set_reward"}
        if self.kl_weight > 0:
            needs.add("reference_scores")
        self.needs = frozenset(needs)
        self.reads_labels = reward == "ndcg"

    def resolve_k(self, inputs: ObjectiveInputs) -> int:
        C = inputs.scores.shape[-1]
        k = self.k if self.k is not None else inputs.top_k
        if k is None:
            raise ValueError("Reinforce.k is null and inputs.top_k is not set: give Reinforce a k")
        if k > C:
            raise ValueError(f"Reinforce needs K <= C, got K={k} passages per sample from C={C} candidates")
        return k

    def rewards(self, inputs: ObjectiveInputs, samples: Tensor) -> Tensor:
        """(B, G, K) samples -> (B, G) detached rewards."""
        if self.reward == "ndcg":
            return ndcg_reward(samples, inputs.gold.bool())
        if inputs.set_reward is None:
            raise ValueError(
                f"Reinforce(reward={self.reward!r}) needs inputs.set_reward (the training module's)"
            )
        rewards = inputs.set_reward(samples, self.reward)
        if tuple(rewards.shape) != tuple(samples.shape[:2]):
            raise ValueError(
                f"set_reward returned shape {tuple(rewards.shape)}, expected {tuple(samples.shape[:2])}"
            )
        return rewards.detach().to(inputs.scores.dtype)

    def forward(self, inputs: ObjectiveInputs) -> dict[str, Tensor]:
        k = self.resolve_k(inputs)
        logits = inputs.scores / self.temperature  # (B, C)
        samples = gumbel_top_k(logits, k, self.num_samples)  # (B, G, K)
        rewards = self.rewards(inputs, samples)  # (B, G)
        adv = advantages(rewards, self.baseline, self.normalize_advantage).detach()  # (B, G)
        log_p = plackett_luce_log_prob(logits, samples)  # (B, G)
        terms = {"policy_loss": -(adv * log_p).mean(), "reward_mean": rewards.mean().detach()}
        if self.kl_weight > 0:
            if inputs.reference_scores is None:
                raise ValueError("Reinforce(kl_weight > 0) needs inputs.reference_scores (B, C)")
            log_ret = torch.log_softmax(logits, dim=-1)  # (B, C)
            log_ref = torch.log_softmax(inputs.reference_scores.detach() / self.temperature, dim=-1)  # (B, C)
            kl = kl_from_log_probs(log_ret, log_ref).mean()
            terms["kl_penalty"] = self.kl_weight * kl
            terms["kl"] = kl.detach()
        return terms
