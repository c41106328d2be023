"""losses/uniformity.py: Wang and Isola's uniformity term by hand, its gradient spreading
collapsed vectors, its configuration errors, and the module handing it the retrieval vectors."""

from __future__ import annotations

import math

import pytest
import torch

from joint_rag.data.collate import collate_examples
from joint_rag.losses import ObjectiveInputs, Similarity, Uniformity
from joint_rag.losses.uniformity import uniformity


def test_by_hand():
    orthogonal = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # normalised first: |x - y|^2 = 2
    assert float(uniformity(orthogonal, t=2.0)) == pytest.approx(-4.0)
    collapsed = torch.tensor([[1.0, 1.0], [2.0, 2.0], [0.5, 0.5]])
    assert float(uniformity(collapsed, t=2.0)) == pytest.approx(0.0, abs=1e-6)
    # three points, two of them equal: log((2 exp(0) + 4 exp(-2 t 2)) / 6)
    three = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    want = math.log((2 + 4 * math.exp(-2 * 4)) / 6)
    assert float(uniformity(three, t=2.0)) == pytest.approx(want, rel=1e-5)
    # multi-vector rows are flattened: (n, R, D) == (n, R*D)
    multi = torch.randn(5, 3, 4)
    assert float(uniformity(multi)) == pytest.approx(float(uniformity(multi.reshape(5, 12))), rel=1e-6)
    assert float(uniformity(torch.randn(1, 4))) == 0.0


def test_gradient_spreads_collapsed_vectors():
    torch.manual_seed(0)
    v = (torch.ones(16, 8) + 0.01 * torch.randn(16, 8)).requires_grad_()
    opt = torch.optim.Adam([v], lr=0.05)

    def mean_cosine() -> float:
        x = torch.nn.functional.normalize(v.detach(), dim=-1)
        sim = x @ x.T
        return float((sim.sum() - sim.diagonal().sum()) / (16 * 15))

    before = mean_cosine()
    for _ in range(100):
        opt.zero_grad()
        uniformity(v).backward()
        opt.step()
    assert before > 0.99 and mean_cosine() < 0.5


def test_sides_and_bad_config():
    q, p = torch.randn(3, 1, 4), torch.randn(5, 1, 4)
    inputs = ObjectiveInputs(scores=torch.zeros(3, 2), gold=torch.zeros(3, 2, dtype=torch.bool))
    inputs.query_vectors, inputs.passage_vectors = q, p
    assert float(Uniformity(sides="passages")(inputs)["uniformity"]) == pytest.approx(float(uniformity(p)))
    assert float(Uniformity(sides="queries")(inputs)["uniformity"]) == pytest.approx(float(uniformity(q)))
    both = (float(uniformity(p)) + float(uniformity(q))) / 2
    assert float(Uniformity(sides="both")(inputs)["uniformity"]) == pytest.approx(both)
    with pytest.raises(ValueError, match="sides must be one of"):
        Uniformity(sides="corpus")
    with pytest.raises(ValueError, match="t must be a positive number"):
        Uniformity(t=0)
    inputs.passage_vectors = None
    with pytest.raises(ValueError, match="needs the retrieval vectors"):
        Uniformity()(inputs)


@pytest.mark.parametrize("retrieval", ["mean_pool", "memory"])
def test_the_module_hands_over_the_retrieval_vectors(tiny_module, retrieval):
    from joint_rag.models import Compressor

    comp = Compressor("tiny-bert", num_memory_tokens=2, max_length=48, retrieval=retrieval)
    module, data = tiny_module(
        compressor=comp, objectives={"similarity": Similarity(), "uniformity": Uniformity(sides="both")}
    )
    module.build_index(show_progress=False)
    batch = collate_examples(data.train[:3])
    inputs = module._joint_inputs(batch, module.objective.needs)
    U = inputs.inbatch_scores.shape[1]
    R = 2 if retrieval == "memory" else 1
    assert inputs.passage_vectors.shape[:2] == (U, R) and inputs.query_vectors.shape[:2] == (3, R)
    total, terms = module.objective(inputs)
    assert "uniformity/uniformity" in terms and bool(torch.isfinite(total))
    total.backward()
    grads = [p.grad for p in module.system.compressor.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
