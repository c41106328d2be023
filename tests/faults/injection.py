"""Fault injection for the subprocess tests (importable as ``injection`` with tests/faults on
PYTHONPATH, e.g. ``--trainer.callbacks+=injection.KillAt``)."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class KillAt(pl.Callback):
    """SIGKILL this process when training step ``step`` is about to run (nothing is flushed,
    nothing cleaned up: as if the machine had lost power)."""

    def __init__(self, step: int = 4) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
