"""Train/eval modes of the parts during joint training.

Hugging Face models load in eval mode and Lightning keeps each module's mode as it finds it, so
without care a frozen retriever can end up in train mode (dropout noise in its scores) or a
trained one in eval mode. The rule here: a module trains when some parameter below it is
trainable; a module without parameters (dropout, activations, the selector) follows its parent.
Index builds and searches run in eval mode through ``joint_rag.system.eval_mode``, which gives
every submodule its own mode back.
"""

from __future__ import annotations

from torch import nn


def train_trainable_parts(module: nn.Module, parent_mode: bool = True) -> nn.Module:
    """Set train mode where some parameter below trains, eval mode where all are frozen."""
    params = list(module.parameters())
    mode = any(p.requires_grad for p in params) if params else parent_mode
    module.training = mode
    for child in module.children():
        train_trainable_parts(child, mode)
    return module
