"""Callbacks: IndexRefresh keeps the corpus index fresh (blocking, rolling or rerank refresh, with
staleness metrics); LogProgress prints one line every N steps where rich's live bars do not
render."""

from __future__ import annotations

import math
import sys
import time

import pytorch_lightning as pl
import torch

from joint_rag.system import eval_mode
from joint_rag.training.module import JointRAGModule

MODES = ("blocking", "rolling", "rerank")


class IndexRefresh(pl.Callback):
    """Build the passage index when training starts and keep it fresh in one of three modes.

    - ``blocking``: re-encode the whole corpus every ``every_n_steps`` steps (training waits).
    - ``rolling``: after every step re-encode the next 1/R of the corpus (R = ``rolling_steps``,
      default ``every_n_steps``) and write it into the index, so a full refresh is spread over R
      steps and no step waits for a whole corpus pass; rows are at most R steps old.
    - ``rerank``: never refresh in training; each step searches the stale index for
      ``rerank_depth`` (C') > C candidates, scores them with the current encoders and keeps the
      best C (``JointRAGModule.candidate_ids``).

    Staleness is logged: ``train/staleness`` (age in steps of the oldest index row),
    ``train/row_age_mean`` and ``train/row_age_max`` (age of the rows the step's search returned),
    and ``train/stale_overlap``: on a fixed sample of ``probe_queries`` training questions, the
    fraction of the fresh index's top-C that the candidates of this mode contain. Blocking mode
    measures it at every refresh (the fresh index is being built anyway); the other modes every
    ``overlap_every_n_steps`` steps (0: never), which costs one extra corpus pass each time.

    Guards copied from ModelCheckpoint's habits: no refresh during the sanity check or
    fast_dev_run, and never twice for the same global step. The mode's state (last refresh,
    rolling cursor) is saved in checkpoints, the index itself by the module; a resumed fit
    searches that index (from a checkpoint without one, it builds an index tagged with the
    restored step).

    Args:
        every_n_steps: blocking refresh period in optimiser steps (0: never refresh after the
            first build); the default R of rolling mode.
        refresh_before_eval: rebuild before validation/test if the index is stale, so
            evaluation uses the current passage encoder (rolling mode: rows may then be R
            steps old; set false to evaluate on the rolling index as it is).
        show_progress: rich progress bar while encoding the corpus.
        mode: "blocking", "rolling" or "rerank".
        rolling_steps: R, steps per full rolling refresh (None: ``every_n_steps``).
        rerank_depth: C', candidates searched per query in rerank mode (default 4 C).
        probe_queries: training questions in the fixed staleness sample (0: no overlap metric).
        overlap_every_n_steps: rolling/rerank: steps between overlap measurements (0: never).
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        refresh_before_eval: bool = True,
        show_progress: bool = True,
        mode: str = "blocking",
        rolling_steps: int | None = None,
        rerank_depth: int | None = None,
        probe_queries: int = 32,
        overlap_every_n_steps: int = 0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"IndexRefresh.mode must be one of {MODES}, got {mode!r}")
        for name, value in (
            ("every_n_steps", every_n_steps),
            ("probe_queries", probe_queries),
            ("overlap_every_n_steps", overlap_every_n_steps),
        ):
            if value < 0:
                raise ValueError(f"IndexRefresh.{name} must be >= 0, got {value}")
        rolling_steps = every_n_steps if rolling_steps is None else rolling_steps
        if mode == "rolling" and rolling_steps < 1:
            raise ValueError(f"IndexRefresh: rolling mode needs rolling_steps >= 1, got {rolling_steps}")
        if rerank_depth is not None and rerank_depth < 1:
            raise ValueError(f"IndexRefresh.rerank_depth must be >= 1, got {rerank_depth}")
        self.every_n_steps = every_n_steps
        self.refresh_before_eval = refresh_before_eval
        self.show_progress = show_progress
        self.mode = mode
        self.rolling_steps = rolling_steps
        self.rerank_depth = rerank_depth
        self.probe_queries = probe_queries
        self.overlap_every_n_steps = overlap_every_n_steps
        self.last_refresh_step: int | None = None
        self.refreshes = 0
        self.cursor = 0  # rolling: the next corpus row to re-encode
        self.last_overlap: float | None = None

    # ------------------------------------------------------------------ helpers
    def _refresh(self, trainer: pl.Trainer, pl_module: JointRAGModule, probe: bool = False) -> None:
        if pl_module.index_is_current():  # a frozen plain passage encoder: nothing to re-encode
            self._mark_current(trainer, pl_module)
            return
        before = self._probe_candidates(trainer, pl_module) if probe else None
        pl_module.build_index(show_progress=self.show_progress)
        if before is not None:
            self._log_overlap(pl_module, before, pl_module.system.index)
        self.last_refresh_step = trainer.global_step
        self.refreshes += 1

    def _probe(self, trainer: pl.Trainer) -> tuple[list[str], list[str | None]] | None:
        dm = getattr(trainer, "datamodule", None)
        train = dm.data.train if dm is not None and hasattr(dm, "data") else None
        if not self.probe_queries or not train:
            return None
        step = max(1, len(train) // self.probe_queries)
        sample = list(train)[::step][: self.probe_queries]  # fixed: the same questions every time
        return [e.query for e in sample], [e.instruction for e in sample]

    def _probe_candidates(self, trainer: pl.Trainer, pl_module: JointRAGModule):
        probe = self._probe(trainer)
        if probe is None or pl_module.system.index is None or pl_module.candidate_source != "index":
            return None
        return probe, pl_module.candidate_ids(*probe)[0]

    def _log_overlap(self, pl_module: JointRAGModule, before, fresh_index) -> None:
        (queries, instructions), used = before
        C = pl_module.system.num_candidates
        with eval_mode(pl_module.system.query_encoder), torch.no_grad():
            q = pl_module.system.encode_queries(queries, instructions)
        _, rows = fresh_index.search(q, C)
        ids = fresh_index.passage_ids
        fresh = [{ids[r] for r in row} for row in rows.tolist()]
        overlap = sum(len(f & set(u)) / len(f) for f, u in zip(fresh, used)) / len(used)
        self.last_overlap = overlap
        pl_module.log("train/stale_overlap", overlap, batch_size=len(used))

    def _mark_current(self, trainer: pl.Trainer, pl_module: JointRAGModule) -> None:
        index = pl_module.system.index
        index.step = trainer.global_step
        index.row_steps = torch.full_like(index.row_steps, trainer.global_step)  # as fresh as a rebuild's
        self.last_refresh_step = trainer.global_step

    def _roll(self, trainer: pl.Trainer, pl_module: JointRAGModule) -> None:
        if pl_module.index_is_current():
            self._mark_current(trainer, pl_module)
            return
        owned = pl_module.system.index.owned_rows  # all rows, or this rank's shard under DDP
        n = len(owned)
        chunk = math.ceil(n / self.rolling_steps)
        start = self.cursor % n
        rows = [owned[(start + i) % n] for i in range(min(chunk, n))]
        pl_module.system.refresh_rows(rows, trainer.global_step)
        self.cursor = (start + len(rows)) % n

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: JointRAGModule, stage: str) -> None:
        if self.mode == "rerank":
            depth = self.rerank_depth or 4 * pl_module.system.num_candidates
            if depth <= pl_module.system.num_candidates:
                raise ValueError(
                    f"IndexRefresh.rerank_depth={depth} must exceed model.num_candidates="
                    f"{pl_module.system.num_candidates} (C' > C)"
                )
            pl_module.rerank_depth = depth

    def on_train_start(self, trainer: pl.Trainer, pl_module: JointRAGModule) -> None:
        # on_train_start, not on_fit_start: a resumed fit has restored its global step by now.
        # A checkpoint's own index (JointRAGModule.on_load_checkpoint) is kept as it was, rolling
        # rows and ages included; without one the index is built and tagged with the restored
        # step (staleness counts from it), not with 0
        if trainer.global_step < pl_module.pretrain_steps:
            return
        index = pl_module.system.index
        if pl_module.index_restored and index is not None:
            return
        if index is None or index.step != trainer.global_step:
            self._refresh(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: JointRAGModule, outputs, batch, batch_idx: int
    ) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        step = trainer.global_step
        pretrain_steps = pl_module.pretrain_steps
        if step < pretrain_steps or step == self.last_refresh_step:  # stage 1: no index needed
            return
        if step == pretrain_steps or pl_module.system.index is None:  # stage switch
            self._refresh(trainer, pl_module)
            return
        since = step - pretrain_steps
        if self.mode == "blocking":
            if self.every_n_steps and since % self.every_n_steps == 0:
                self._refresh(trainer, pl_module, probe=True)
            return
        if self.mode == "rolling":
            self._roll(trainer, pl_module)
        if self.overlap_every_n_steps and since % self.overlap_every_n_steps == 0:
            before = self._probe_candidates(trainer, pl_module)
            if before is not None:
                fresh = pl_module.system.build_index(step, show_progress=False, replace=False)
                self._log_overlap(pl_module, before, fresh)

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
        return {
            "mode": self.mode,
            "last_refresh_step": self.last_refresh_step,
            "refreshes": self.refreshes,
            "cursor": self.cursor,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_refresh_step = state_dict.get("last_refresh_step")
        self.refreshes = state_dict.get("refreshes", 0)
        self.cursor = state_dict.get("cursor", 0)


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
