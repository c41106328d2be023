"""Lightning DataModule over any DataSource (synthetic, SQuAD, BEIR, HotpotQA)."""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader, IterableDataset
from torchdata.stateful_dataloader import StatefulDataLoader

from joint_rag.data.collate import collate_examples
from joint_rag.data.types import Corpus, DataError, DataSource, Example, RAGData


class _ListDataset:
    def __init__(self, items: list[Example]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Example:
        return self.items[i]


class _RankBatches(IterableDataset):
    """Evaluation batches of one distributed rank, without padding: global batches of
    ``batch_size * W`` consecutive examples, each split into W near-equal parts, so every rank
    yields the same number of batches (the last ones may be smaller, or empty) and every example
    is evaluated exactly once. Lightning leaves iterable datasets to us (no DistributedSampler,
    which pads with duplicates and skews the metrics)."""

    def __init__(self, items: list[Example], batch_size: int, rank: int, world_size: int) -> None:
        self.batches = []
        step = batch_size * world_size
        for start in range(0, len(items), step):
            block = items[start : start + step]
            lo, hi = rank * len(block) // world_size, (rank + 1) * len(block) // world_size
            self.batches.append(block[lo:hi])

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        yield from self.batches


class RAGDataModule(pl.LightningDataModule):
    """Loads a DataSource once and serves train/val/test batches of `RAGBatch`.

    Args:
        source: where the corpus and examples come from (``class_path`` in YAML).
        batch_size: training batch size B.
        eval_batch_size: validation/test batch size.
        num_workers: DataLoader workers (0 is right for CPU runs).
        max_train_examples: cap on training examples (None: all).
        max_eval_examples: cap on validation/test examples (None: all).
        require_answers: reject data without answers (generation training needs them).
        val_split: which split `validate` (and validation during fit) reads: "val" or "test"
            (e.g. the whole SciFact test set, to compare with published figures).

    With ``model.candidate_source: example`` (per-example candidate lists, HotpotQA), ``setup``
    checks that every example of the splits the stage reads has at least
    ``model.num_candidates`` candidates (`check_candidates`), so a short list is reported when
    the data loads, not as a crash in the training step or a silently shorter ranking.
    """

    def __init__(
        self,
        source: DataSource,
        batch_size: int = 8,
        eval_batch_size: int = 16,
        num_workers: int = 0,
        max_train_examples: int | None = None,
        max_eval_examples: int | None = None,
        require_answers: bool = True,
        val_split: str = "val",
    ) -> None:
        super().__init__()
        self.source = source
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.max_train_examples = max_train_examples
        self.max_eval_examples = max_eval_examples
        self.require_answers = require_answers
        if val_split not in ("val", "test"):
            raise ValueError(f"data.val_split must be 'val' or 'test', got {val_split!r}")
        self.val_split = val_split
        self._data: RAGData | None = None

    @property
    def data(self) -> RAGData:
        if self._data is None:
            data = self.source.load()
            if self.max_train_examples is not None:
                data.train = data.train[: self.max_train_examples]
            if self.max_eval_examples is not None:
                data.val = data.val[: self.max_eval_examples]
                data.test = data.test[: self.max_eval_examples]
            if self.require_answers:
                for split, items in (("train", data.train), (self.val_split, getattr(data, self.val_split))):
                    missing = [ex.example_id for ex in items if not ex.answers]
                    if missing:
                        raise ValueError(
                            f"{type(self.source).__name__}: {len(missing)} {split} examples have no answer "
                            f"(first: {missing[0]!r}); set data.require_answers: false for retrieval-only runs"
                        )
            self._data = data
        return self._data

    @property
    def corpus(self) -> Corpus:
        return self.data.corpus

    def setup(self, stage: str | None = None) -> None:
        _ = self.data
        module = self.trainer.lightning_module if self.trainer is not None else None
        if getattr(module, "candidate_source", None) == "example":
            self.check_candidates(module.system.num_candidates, self._stage_splits(stage))

    def _stage_splits(self, stage: str | None) -> tuple[str, ...]:
        """The splits a Lightning stage reads (None: all)."""
        test = "test" if self.data.test else "val"
        return {"fit": ("train", self.val_split), "validate": (self.val_split,), "test": (test,)}.get(
            stage or "", ("train", "val", "test")
        )

    def check_candidates(
        self, num_candidates: int, splits: tuple[str, ...] = ("train", "val", "test")
    ) -> None:
        """Raise DataError if an example of ``splits`` lists fewer than ``num_candidates`` candidates.

        The message names the first such example (its id and where it came from), its count,
        how many examples are short and the fewest candidates any has, and what to change.
        Examples without a candidate list are not checked (they use the index).
        """
        for split in dict.fromkeys(splits):
            short = [
                ex
                for ex in getattr(self.data, split)
                if ex.candidate_ids is not None and len(ex.candidate_ids) < num_candidates
            ]
            if not short:
                continue
            ex, fewest = short[0], min(len(e.candidate_ids or []) for e in short)
            where = ex.meta.get("where") or type(self.source).__name__
            raise DataError(
                f"{where}: example {ex.example_id!r} has {len(ex.candidate_ids or [])} candidate passages "
                f"but model.num_candidates is {num_candidates} ({len(short)} {split} examples have fewer, "
                f"the fewest {fewest}); set model.num_candidates: {fewest} or give every example at least "
                f"{num_candidates} candidates"
            )

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, items: list[Example], batch_size: int, shuffle: bool) -> DataLoader:
        rank, world_size = self._world()
        if not shuffle and world_size > 1:
            return DataLoader(
                _RankBatches(items, batch_size, rank, world_size),
                batch_size=None,
                num_workers=0,
                collate_fn=collate_examples,
            )
        # stateful: a checkpoint records the shuffle's generator and position, so a fit resumed
        # mid-epoch sees the batches the interrupted one would have seen next
        return StatefulDataLoader(
            _ListDataset(items),
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_examples,
        )

    def train_dataloader(self) -> DataLoader:
        if not self.data.train:
            raise ValueError(
                f"{type(self.source).__name__}: the 'train' split is empty (e.g. evaluate_all: true, or "
                "every example listed for val/test); fit needs training examples, validate and test do not"
            )
        return self._loader(self.data.train, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        items = self.data.test if self.val_split == "test" else self.data.val
        if not items:
            raise ValueError(
                f"{type(self.source).__name__}: the {self.val_split!r} split is empty; "
                "set a non-zero val_fraction in the source or data.val_split: test"
            )
        return self._loader(items, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data.test or self.data.val, self.eval_batch_size, shuffle=False)
