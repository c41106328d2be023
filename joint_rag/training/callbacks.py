"""Callbacks: IndexRefresh rebuilds the corpus index every N training steps; LogProgress prints
one line every N steps where rich's live bars do not render."""

from __future__ import annotations

import sys
import time

import pytorch_lightning as pl

from joint_rag.training.module import JointRAGModule


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

    def _refresh(self, trainer: pl.Trainer, pl_module: JointRAGModule) -> None:
        pl_module.build_index(show_progress=self.show_progress)
        self.last_refresh_step = trainer.global_step
        self.refreshes += 1

    def on_train_start(self, trainer: pl.Trainer, pl_module: JointRAGModule) -> None:
        # on_train_start, not on_fit_start: a resumed fit has restored its global step by now,
        # so the index is tagged with that step (staleness counts from it), not with 0
        if trainer.global_step < pl_module.pretrain_steps:
            return
        index = pl_module.system.index
        if index is None or index.step != trainer.global_step:
            self._refresh(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: JointRAGModule, outputs, batch, batch_idx: int
    ) -> None:
        if self.every_n_steps == 0 or trainer.sanity_checking or trainer.fast_dev_run:
            return
        step = trainer.global_step
        pretrain_steps = pl_module.pretrain_steps
        if step < pretrain_steps:  # stage 1 trains on gold passages: no index needed
            return
        if (
            step == pretrain_steps
            and step != self.last_refresh_step
            or (step - pretrain_steps) % self.every_n_steps == 0
            and step != self.last_refresh_step
        ):  # stage switch
            self._refresh(trainer, pl_module)

    def _before_eval(self, trainer: pl.Trainer, pl_module: JointRAGModule) -> None:
        if trainer.sanity_checking:
            return
        index = pl_module.system.index
        stale = index is None or index.step != trainer.global_step
        if stale and (self.refresh_before_eval or index is None):
            self._refresh(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: JointRAGModule) -> None:
        self._before_eval(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: JointRAGModule) -> None:
        self._before_eval(trainer, pl_module)

    def state_dict(self) -> dict:
        return {"last_refresh_step": self.last_refresh_step, "refreshes": self.refreshes}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_refresh_step = state_dict.get("last_refresh_step")
        self.refreshes = state_dict.get("refreshes", 0)


class LogProgress(pl.Callback):
    """Print one line every ``every_n_steps`` training steps (loss, stage, seconds per step) and
    every ``every_n_steps`` evaluation batches when output is not a terminal (log files, CI),
    where the live progress bars do not render.

    Args:
        every_n_steps: training steps (and evaluation batches) between lines.
        only_without_tty: print nothing when stdout is a terminal.
    """

    def __init__(self, every_n_steps: int = 10, only_without_tty: bool = True) -> None:
        self.every_n_steps = max(1, every_n_steps)
        self.only_without_tty = only_without_tty
        self._t0 = 0.0
        self._last = 0.0
        self._eval_t0 = 0.0

    def _active(self) -> bool:
        return not (self.only_without_tty and sys.stdout.isatty())

    def on_train_start(self, trainer: pl.Trainer, pl_module: JointRAGModule) -> None:
        self._t0 = self._last = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: JointRAGModule, outputs, batch, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if not self._active() or step % self.every_n_steps:
            return
        now = time.perf_counter()
        loss = trainer.callback_metrics.get("train/loss")
        stage = "pretrain" if pl_module.in_pretraining else "joint"
        print(
            f"[train] step {step}/{trainer.max_steps} ({stage}) loss {float(loss) if loss is not None else float('nan'):.4f} "
            f"{(now - self._last) / self.every_n_steps:.2f} s/step, {now - self._t0:.0f} s elapsed",
            flush=True,
        )
        self._last = now

    def _eval_start(self) -> None:
        self._eval_t0 = time.perf_counter()

    def _eval_batch(self, trainer: pl.Trainer, split: str, batch_idx: int, total) -> None:
        done = batch_idx + 1
        if self._active() and (done % self.every_n_steps == 0 or done == total):
            of = f"/{int(total)}" if isinstance(total, int | float) and total != float("inf") else ""
            print(f"[{split}] batch {done}{of}, {time.perf_counter() - self._eval_t0:.0f} s", flush=True)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: JointRAGModule) -> None:
        self._eval_start()

    def on_test_start(self, trainer: pl.Trainer, pl_module: JointRAGModule) -> None:
        self._eval_start()

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not trainer.sanity_checking:
            self._eval_batch(trainer, "val", batch_idx, trainer.num_val_batches[dataloader_idx])

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_batch(trainer, "test", batch_idx, trainer.num_test_batches[dataloader_idx])
