"""The divergence guard's checks and its one-line message (``JointRAGModule`` calls them before
and after every optimiser step, and before a checkpoint or an index is written)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from joint_rag.errors import DivergenceError


def nonfinite(named: Iterable[tuple[str, Tensor | None]]) -> list[str]:
    """The names whose tensor holds NaN or inf (None tensors are skipped)."""
    return [name for name, t in named if t is not None and not bool(torch.isfinite(t).all())]


def few(names: list[str]) -> str:
    """At most three names, then how many more."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def divergence_error(
    step: int, what: str, terms: dict[str, Tensor] | None, learning_rates: str
) -> DivergenceError:
    """One line: the step, what is non-finite, the loss terms, the learning rates, what to do."""
    parts = ", ".join(f"{name}={float(value.detach()):.4g}" for name, value in (terms or {}).items())
    return DivergenceError(
        f"training diverged at step {step}: {what}"
        + (f"; loss terms: {parts}" if parts else "")
        + f"; learning rates: {learning_rates}. No checkpoint was written for this step; "
        "lower model.lr / model.lr_retriever, add warmup_steps or gradient clipping "
        "(trainer.gradient_clip_val), and resume from the last checkpoint"
    )
