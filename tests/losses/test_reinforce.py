"""Reinforce: the score-function estimator against the exact gradient of the expected reward
(all ordered K-sequences enumerated), the baselines, nDCG by hand, config errors, and the
training module's plumbing (nDCG, log-likelihood and F1 rewards, the KL reference)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import joint_rag.losses.reinforce as reinforce
from joint_rag.data.collate import collate_examples
from joint_rag.losses import CombinedObjective, ObjectiveInputs, Reinforce
from joint_rag.losses.reinforce import gumbel_top_k, ndcg_reward, plackett_luce_log_prob

C, K, TAU = 4, 2, 0.7
SCORES = torch.tensor([0.9, -0.4, 0.3, -1.2], dtype=torch.float64)
#: the Monte-Carlo tolerance: this many standard errors of the per-query estimate, per coordinate
N_SE = 5.0


def _table() -> torch.Tensor:
    """(C, C) reward of each ordered pair (i, j), i != j: order-dependent on purpose."""
    g = torch.Generator().manual_seed(1)
    return torch.rand(C, C, generator=g, dtype=torch.float64)


def _exact_gradient(table: torch.Tensor) -> torch.Tensor:
    """grad_s E_{z ~ PL(s / tau)}[R(z)], E by enumerating all C!/(C-K)! ordered K-sequences."""
    s = SCORES.clone().requires_grad_(True)
    logits = s / TAU
    expected = s.new_zeros(())
    total = s.new_zeros(())
    for seq in itertools.permutations(range(C), K):
        p = plackett_luce_log_prob(logits[None], torch.tensor(seq)[None, None]).exp()[0, 0]
        expected = expected + p * table[seq]
        total = total + p.detach()
    assert float(total) == pytest.approx(1.0, abs=1e-12)  # PL over ordered sequences sums to 1
    (grad,) = torch.autograd.grad(expected, s)
    return grad


def _estimates(objective: Reinforce, table: torch.Tensor, rows: int, seed: int = 0) -> torch.Tensor:
    """(rows, C) independent per-query estimates of grad E[R] (the negative loss gradient):
    every row is the same query, so the rows are i.i.d. and their spread gives the error."""
    torch.manual_seed(seed)
    scores = SCORES.expand(rows, C).clone().requires_grad_(True)
    inputs = ObjectiveInputs(
        scores=scores,
        gold=torch.zeros(rows, C, dtype=torch.bool),
        set_reward=lambda samples, metric: table[samples[..., 0], samples[..., 1]],
    )
    objective(inputs)["policy_loss"].backward()
    return -scores.grad * rows  # the loss is a mean over rows


def _within(est: torch.Tensor, target: torch.Tensor) -> tuple[bool, torch.Tensor, torch.Tensor]:
    mean = est.mean(0)
    se = est.std(0) / math.sqrt(est.shape[0])
    return bool(((mean - target).abs() <= N_SE * se + 1e-9).all()), mean, se


@pytest.mark.parametrize("baseline,G", [("none", 1), ("none", 4), ("leave_one_out", 4), ("leave_one_out", 2)])
def test_estimator_mean_is_the_exact_gradient(baseline: str, G: int) -> None:
    table = _table()
    exact = _exact_gradient(table)
    est = _estimates(Reinforce(num_samples=G, k=K, temperature=TAU, baseline=baseline), table, rows=20000)
    ok, mean, se = _within(est, exact)
    assert ok, f"mean {mean.tolist()} vs exact {exact.tolist()} (se {se.tolist()})"
    # the test can fail: the sign-flipped estimate is many standard errors away
    assert not _within(-est, exact)[0]


def test_group_mean_baseline_is_the_unbiased_gradient_shrunk_by_g_minus_1_over_g() -> None:
    # A_group_mean = (G-1)/G * A_leave_one_out exactly; G = 2 halves the gradient
    table = _table()
    exact = _exact_gradient(table)
    est = _estimates(Reinforce(num_samples=2, k=K, temperature=TAU, baseline="group_mean"), table, rows=20000)
    assert _within(est, 0.5 * exact)[0]
    assert not _within(est, exact)[0]


def test_a_wrong_log_probability_does_not_match(monkeypatch) -> None:
    # sampling with replacement's log-probability (no renormalisation over the remaining
    # candidates) gives a biased gradient: the comparison must catch it
    def with_replacement(logits, samples):
        lp = torch.log_softmax(logits, -1)[:, None, :].expand(*samples.shape[:2], -1)
        return lp.gather(-1, samples).sum(-1)

    table = _table()
    exact = _exact_gradient(table)
    monkeypatch.setattr(reinforce, "plackett_luce_log_prob", with_replacement)
    est = _estimates(
        Reinforce(num_samples=4, k=K, temperature=TAU, baseline="leave_one_out"), table, rows=20000
    )
    assert not _within(est, exact)[0]


def test_gumbel_top_k_draws_plackett_luce_frequencies() -> None:
    torch.manual_seed(0)
    logits = (SCORES / TAU)[None]
    n = 40000
    samples = gumbel_top_k(logits, K, n)[0]  # (n, K)
    for seq in itertools.permutations(range(C), K):
        p = float(plackett_luce_log_prob(logits, torch.tensor(seq)[None, None]).exp())
        freq = float((samples == torch.tensor(seq)).all(-1).double().mean())
        assert abs(freq - p) <= N_SE * math.sqrt(p * (1 - p) / n), (seq, freq, p)


def test_ndcg_reward_by_hand() -> None:
    gold = torch.tensor(
        [[False, True, False, True], [False, False, False, False], [True, False, False, False]]
    )
    samples = torch.tensor([[[1, 3], [0, 1]], [[0, 1], [2, 3]], [[1, 0], [0, 2]]])  # (3, 2, 2)
    r = ndcg_reward(samples, gold)
    idcg2 = 1.0 + 1.0 / math.log2(3.0)
    expected = [[1.0, (1.0 / math.log2(3.0)) / idcg2], [0.0, 0.0], [1.0 / math.log2(3.0), 1.0]]
    assert r.flatten().tolist() == pytest.approx(sum(expected, []), abs=1e-6)


def test_logged_terms_are_not_summed_and_kl_is_against_the_reference() -> None:
    torch.manual_seed(0)
    scores = torch.tensor([[0.5, 0.1, -0.3]], requires_grad=True)
    ref = torch.tensor([[0.0, 0.0, 0.0]])
    inputs = ObjectiveInputs(
        scores=scores, gold=torch.tensor([[True, False, False]]), top_k=2, reference_scores=ref
    )
    obj = Reinforce(num_samples=3, reward="ndcg", kl_weight=0.5)
    assert obj.needs == {"reference_scores"}
    torch.manual_seed(0)
    terms = obj(inputs)
    p = torch.softmax(scores.detach(), -1)
    kl = float((p * (p.log() - math.log(1 / 3))).sum())
    assert float(terms["kl"].detach()) == pytest.approx(kl, abs=1e-6)
    assert float(terms["kl_penalty"].detach()) == pytest.approx(0.5 * kl, abs=1e-6)
    torch.manual_seed(0)
    total, logged = CombinedObjective({"rl": obj})(inputs)
    assert set(logged) == {"rl/policy_loss", "rl/reward_mean", "rl/kl", "rl/kl_penalty"}
    assert float(total.detach()) == pytest.approx(
        float(logged["rl/policy_loss"] + logged["rl/kl_penalty"]), abs=1e-6
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_samples": 0}, "num_samples must be an integer >= 1"),
        ({"num_samples": 1}, "num_samples must be >= 2 for baseline"),
        ({"reward": "bleu"}, "reward must be one of"),
        ({"baseline": "mean"}, "baseline must be one of"),
        ({"k": 0}, "k must be an integer >= 1"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"kl_weight": -1.0}, "kl_weight must be"),
    ],
)
def test_bad_config_is_one_clear_error(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        Reinforce(**kwargs)


def test_k_larger_than_c_is_one_clear_error() -> None:
    inputs = ObjectiveInputs(scores=torch.zeros(1, 3), gold=torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="K <= C, got K=4 .* C=3"):
        Reinforce(num_samples=2, k=4, reward="ndcg")(inputs)
    with pytest.raises(ValueError, match="give Reinforce a k"):
        Reinforce(num_samples=2, reward="ndcg")(inputs)


# ---------------------------------------------------------------- through the training module
def _step(module, data, n: int = 2):
    module.build_index(show_progress=False)
    torch.manual_seed(0)
    inputs = module._joint_inputs(collate_examples(data.train[:n]), module.objective.needs)
    total, terms = module.objective(inputs)
    total.backward()
    return inputs, total, terms


def _grad_sum(params) -> float:
    return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)


def test_ndcg_reward_trains_the_retriever_only(tiny_module) -> None:
    module, data = tiny_module(objectives={"rl": Reinforce(num_samples=4, reward="ndcg")})
    inputs, total, terms = _step(module, data)
    assert inputs.top_k == 2 and inputs.set_reward is None and inputs.answer_nll is None
    assert bool(torch.isfinite(total))
    assert 0.0 <= float(terms["rl/reward_mean"]) <= 1.0
    assert _grad_sum(module.system.query_encoder.parameters()) > 0
    assert _grad_sum(module.system.compressor.backbone.parameters()) > 0
    assert _grad_sum(module.system.generator.parameters()) == 0.0


@pytest.mark.parametrize("reward", ["loglik", "f1"])
@pytest.mark.parametrize("mode", ["memory", "text"])
def test_generator_rewards_through_the_module(tiny_module, reward: str, mode: str) -> None:
    from joint_rag.models import Generator

    module, data = tiny_module(
        generator=Generator("tiny-llama", mode=mode, max_new_tokens=3),
        objectives={"rl": Reinforce(num_samples=3, reward=reward)},
    )
    seen = {}
    objective = module.objective.objectives["rl"]
    original = objective.rewards

    def spy(inputs, samples):
        seen["samples"], seen["rewards"] = samples, original(inputs, samples)
        return seen["rewards"]

    objective.rewards = spy
    _, total, _ = _step(module, data)
    assert seen["samples"].shape == (2, 3, 2) and seen["rewards"].shape == (2, 3)
    assert not seen["rewards"].requires_grad and bool(torch.isfinite(seen["rewards"]).all())
    if reward == "loglik":
        assert bool((seen["rewards"] < 0).all())  # - NLL
    else:
        assert bool(((seen["rewards"] >= 0) & (seen["rewards"] <= 1)).all())
    assert bool(torch.isfinite(total))
    assert any(p.grad is not None for p in module.system.query_encoder.parameters())
    if reward == "loglik":  # the tiny random generator's greedy answers all score F1 0: no signal
        assert _grad_sum(module.system.query_encoder.parameters()) > 0
    assert _grad_sum(module.system.generator.parameters()) == 0.0  # the reward is detached


def test_kl_reference_is_the_frozen_initial_retriever(tiny_module) -> None:
    module, data = tiny_module(objectives={"rl": Reinforce(num_samples=2, reward="ndcg", kl_weight=1.0)})
    inputs, _, terms = _step(module, data)
    # at the first step the reference is the retriever itself (eval mode: no dropout)
    assert inputs.reference_scores is not None and not inputs.reference_scores.requires_grad
    with torch.no_grad():
        for p in module.system.query_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.manual_seed(0)
    again = module._joint_inputs(collate_examples(data.train[:2]), module.objective.needs)
    assert torch.allclose(again.reference_scores, inputs.reference_scores)  # frozen: unchanged
    assert not torch.allclose(again.scores.detach(), inputs.scores.detach())
    names = {n for n, _ in module.named_parameters()}
    assert not any("kl_reference" in n for n in names)  # not in the state dict or the optimiser
    checkpoint = {"state_dict": {}}
    module.on_save_checkpoint(checkpoint)
    assert "kl_reference" in checkpoint["joint_rag"]
    fresh, _ = tiny_module(objectives={"rl": Reinforce(num_samples=2, reward="ndcg", kl_weight=1.0)})
    fresh.on_load_checkpoint(checkpoint)
    ref = fresh._kl_reference()
    for k, v in module._kl_reference().state_dict().items():
        assert torch.equal(ref.state_dict()[k], v)


def test_f1_reward_scores_the_greedy_answer_of_each_set(tiny_module, monkeypatch) -> None:
    module, data = tiny_module(objectives={"rl": Reinforce(num_samples=3, reward="f1")})
    module.build_index(show_progress=False)
    batch = collate_examples(data.train[:2])
    calls = []

    def generate(queries, memory=None, passages=None, instructions=None):
        calls.append(memory.shape)
        # row b*G + g answers right on g == 1 only
        return [batch.all_answers[i // 3][0] if i % 3 == 1 else "zzz" for i in range(len(queries))]

    monkeypatch.setattr(module.system.generator, "generate", generate)
    torch.manual_seed(0)
    inputs = module._joint_inputs(batch, module.objective.needs)
    rewards = inputs.set_reward(torch.tensor([[[0, 1], [1, 2], [2, 3]], [[3, 0], [0, 1], [1, 2]]]), "f1")
    assert rewards.tolist() == [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    assert len(calls) == 1 and tuple(calls[0][:3]) == (6, 2, module.system.compressor.num_memory_tokens)
