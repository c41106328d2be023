"""Compressor pretraining (CLaRa stage 1) against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from joint_rag.losses import CompressorPretraining, ObjectiveInputs
from joint_rag.losses.pretraining import memory_alignment_mse


def _pretrain() -> dict[str, torch.Tensor]:
    return {
        "nll": torch.tensor([1.0, 3.0]),  # (B,) mean 2
        # memory means: row 0 (2, 3); row 1 (0, 0)
        "memory": torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[1.0, -1.0], [-1.0, 1.0]]]),  # (2, 2, 2)
        # masked token means: row 0 (1, 1) (the 100s are padding); row 1 (0, 2)
        "token_embeds": torch.tensor(
            [[[0.0, 0.0], [2.0, 2.0], [100.0, 100.0]], [[0.0, 2.0], [0.0, 2.0], [0.0, 2.0]]]
        ),  # (2, 3, 2)
        "token_mask": torch.tensor([[True, True, False], [True, True, True]]),  # (2, 3)
    }


def _inputs(pretrain: dict[str, torch.Tensor] | None) -> ObjectiveInputs:
    return ObjectiveInputs(
        scores=torch.zeros(2, 1), gold=torch.zeros(2, 1, dtype=torch.bool), pretrain=pretrain
    )


def test_mse_hand_value() -> None:
    # squared diffs: row 0 (1, 4), row 1 (0, 4): mean over B and H = 9 / 4
    p = _pretrain()
    assert memory_alignment_mse(p["memory"], p["token_embeds"], p["token_mask"]).item() == pytest.approx(2.25)


def test_weighted_terms() -> None:
    out = CompressorPretraining(task="answer", nll_weight=0.5, mse_weight=2.0)(_inputs(_pretrain()))
    assert set(out) == {"answer_nll", "mse"}
    assert out["answer_nll"].item() == pytest.approx(0.5 * 2.0)
    assert out["mse"].item() == pytest.approx(2.0 * 2.25)


def test_zero_weight_skips_term_and_its_tensors() -> None:
    out = CompressorPretraining(mse_weight=0.0)(_inputs({"nll": torch.tensor([1.0, 3.0])}))
    assert set(out) == {"reconstruct_nll"}
    assert out["reconstruct_nll"].item() == pytest.approx(2.0)


def test_mse_gradient_moves_memory_towards_tokens() -> None:
    p = _pretrain()
    memory = p["memory"].clone().requires_grad_(True)
    p["memory"] = memory
    CompressorPretraining(nll_weight=0.0)(_inputs(p))["mse"].backward()
    with torch.no_grad():
        stepped = memory - 0.1 * memory.grad
    assert memory_alignment_mse(stepped, p["token_embeds"], p["token_mask"]) < 2.25


def test_errors_and_flags() -> None:
    assert CompressorPretraining.needs == frozenset({"pretrain"})
    with pytest.raises(ValueError, match="task"):
        CompressorPretraining(task="summarize")
    with pytest.raises(ValueError, match="inputs.pretrain"):
        CompressorPretraining()(_inputs(None))
    with pytest.raises(ValueError, match="'memory'"):
        CompressorPretraining()(_inputs({"nll": torch.tensor([1.0, 3.0])}))
