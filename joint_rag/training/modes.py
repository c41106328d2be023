"""Train/eval modes of the parts during joint training.

Hugging Face models load in eval mode and Lightning keeps each module's mode as it finds it, so
without care a frozen retriever can end up in train mode (dropout noise in its scores) or a
trained one in eval mode. The rule here: a module trains when some parameter below it is
trainable; a module without parameters (dropout, activations, the selector) follows its parent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


def train_trainable_parts(module: nn.Module, parent_mode: bool = True) -> nn.Module:
    """Set train mode where some parameter below trains, eval mode where all are frozen."""
    params = list(module.parameters())
    mode = any(p.requires_grad for p in params) if params else parent_mode
    module.training = mode
    for child in module.children():
        train_trainable_parts(child, mode)
    return module


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` in eval mode, then give every submodule back its own previous mode.

    ``module.train(was_training)`` would instead put *all* submodules in one mode, e.g. a frozen
    backbone inside a trainable wrapper into train mode.
    """
    saved = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in saved:
            m.training = mode
