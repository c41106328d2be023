"""Callbacks: IndexRefresh rebuilds the corpus index every N training steps."""

from __future__ import annotations

import pytorch_lightning as pl


class IndexRefresh(pl.Callback):
    """Build the passage index at fit start and refresh it every ``every_n_steps`` steps.

    Staleness (steps since the last refresh) is logged by the module as ``train/staleness``.
    Guards copied from ModelCheckpoint's habits: no refresh during the sanity check or
    fast_dev_run, and never twice for the same global step.

    Args:
        every_n_steps: refresh period in optimiser steps (0: never refresh after the first build).
        refresh_before_eval: rebuild before validation/test if the index is stale, so
            evaluation uses the current passage encoder.
        show_progress: rich progress bar while encoding the corpus.
    """

    def __init__(
        self, every_n_steps: int = 50, refresh_before_eval: bool = True, show_progress: bool = True
    ) -> None:
        if every_n_steps < 0:
            raise ValueError(f"IndexRefresh.every_n_steps must be >= 0, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.refresh_before_eval = refresh_before_eval
        self.show_progress = show_progress
        self.last_refresh_step: int | None = None
        self.refreshes = 0

    def _refresh(self, trainer: pl.Trainer, pl_module) -> None:
        pl_module.build_index(show_progress=self.show_progress)
        self.last_refresh_step = trainer.global_step
        self.refreshes += 1

    def on_fit_start(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.global_step < getattr(pl_module, "pretrain_steps", 0):
            return
        if pl_module.index is None or pl_module.index.step != trainer.global_step:
            self._refresh(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.every_n_steps == 0 or trainer.sanity_checking or trainer.fast_dev_run:
            return
        step = trainer.global_step
        pretrain_steps = getattr(pl_module, "pretrain_steps", 0)
        if step < pretrain_steps:  # stage 1 trains on gold passages: no index needed
            return
        if (
            step == pretrain_steps
            and step != self.last_refresh_step
            or (step - pretrain_steps) % self.every_n_steps == 0
            and step != self.last_refresh_step
        ):  # stage switch
            self._refresh(trainer, pl_module)

    def _before_eval(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        stale = pl_module.index is None or pl_module.index.step != trainer.global_step
        if stale and (self.refresh_before_eval or pl_module.index is None):
            self._refresh(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module) -> None:
        self._before_eval(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module) -> None:
        self._before_eval(trainer, pl_module)

    def state_dict(self) -> dict:
        return {"last_refresh_step": self.last_refresh_step, "refreshes": self.refreshes}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_refresh_step = state_dict.get("last_refresh_step")
        self.refreshes = state_dict.get("refreshes", 0)
