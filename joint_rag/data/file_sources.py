"""What every file reader shares: the split options (by group, in file order, by listed ids),
evaluate-all (every example in test) and the cap on examples (`SplitSource`, `FileSource`).
The readers themselves: `squad.py`, `beir.py`, `hotpotqa.py` (all importable from `formats`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from joint_rag.data.reading import read_lines, require_file
from joint_rag.data.splits import IdList, limit, split_by_group, split_by_ids, split_by_order
from joint_rag.data.types import Corpus, DataSource, Example, RAGData


def dedupe(xs: list[str]) -> list[str]:
    """``xs`` without repeats, first occurrence kept (answers, titles, candidate ids)."""
    return list(dict.fromkeys(xs))


SPLIT_BY = ("group", "order", "ids")


def _id_list(value: str | Path | Sequence[str] | None, name: str) -> IdList | None:
    """Listed example ids with where each was listed: a YAML list, or a file of one id a line."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        path = require_file(Path(value), f"a file of example ids for {name}, one per line")
        return [
            (line.strip(), f"{path}:{lineno}")
            for lineno, line in read_lines(path)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    return [(str(x), f"{name}[{i}]") for i, x in enumerate(value)]


class SplitSource(DataSource):
    """How a source divides its examples into train/val/test. The split options of every
    file source:

    Args:
        split_by: how the examples are divided: "group" (at random by the fractions, whole
            groups to one split; the default), "order" (in file order by the fractions: train
            first, then val, then test) or "ids" (by `train_ids` / `val_ids` / `test_ids`,
            implied when any of them is set; the fractions are then ignored).
        train_ids: example ids for train: a list, or the path of a file with one id per line
            (blank lines and lines starting with `#` skipped). None: train takes every example
            not listed for val or test; when set, every example must be listed somewhere.
        val_ids: example ids for validation (a list or a file, as `train_ids`).
        test_ids: example ids for test (a list or a file, as `train_ids`).
        evaluate_all: put every example in val and in test (train empty), to evaluate a model
            on the whole file; excludes `split_by` other than "group" and the id lists.
    """

    def _init_split(
        self,
        split_by: str,
        train_ids: str | list[str] | None,
        val_ids: str | list[str] | None,
        test_ids: str | list[str] | None,
        evaluate_all: bool,
    ) -> None:
        name = type(self).__name__
        if split_by not in SPLIT_BY:
            raise ValueError(f"{name}.split_by must be one of {', '.join(SPLIT_BY)}, got {split_by!r}")
        listed = [
            k
            for k, v in (("train_ids", train_ids), ("val_ids", val_ids), ("test_ids", test_ids))
            if v is not None
        ]
        for key, value in (("train_ids", train_ids), ("val_ids", val_ids), ("test_ids", test_ids)):
            if value is not None and not isinstance(value, (str, Path, list, tuple)):
                raise ValueError(
                    f"{name}.{key} must be a list of ids or a file path, got {type(value).__name__}"
                )
        if split_by == "ids" and not listed:
            raise ValueError(f"{name}.split_by is 'ids' but none of train_ids, val_ids, test_ids is set")
        if listed and split_by == "order":
            raise ValueError(f"{name}: split_by 'order' and {listed[0]} exclude each other; set one")
        if evaluate_all and (listed or split_by != "group"):
            what = listed[0] if listed else f"split_by={split_by!r}"
            raise ValueError(f"{name}: evaluate_all and {what} exclude each other; set one")
        self.split_by = "ids" if listed else split_by
        self.train_ids, self.val_ids, self.test_ids = train_ids, val_ids, test_ids
        self.evaluate_all = evaluate_all

    def _id_lists(self) -> tuple[IdList | None, IdList | None, IdList | None]:
        return (
            _id_list(self.train_ids, "train_ids"),
            _id_list(self.val_ids, "val_ids"),
            _id_list(self.test_ids, "test_ids"),
        )

    def _divide(
        self, examples: list[Example], corpus: Corpus, val: float, test: float, seed: int, source: str
    ) -> tuple[list[Example], list[Example], list[Example]]:
        """(train, val, test) by the split options (fractions `val`, `test` where they apply)."""
        if self.evaluate_all:
            return [], list(examples), list(examples)
        if self.split_by == "ids":
            return split_by_ids(examples, *self._id_lists(), source=source)
        if self.split_by == "order":
            return split_by_order(examples, val, test)
        return split_by_group(examples, corpus, val, test, seed)


def limited(corpus: Corpus, train: list, val: list, test: list, n: int | None, seed: int) -> RAGData:
    """``RAGData`` with each split cut to at most ``n`` examples (seeded; None keeps all)."""
    return RAGData(corpus, limit(train, n, seed), limit(val, n, seed), limit(test, n, seed))


class FileSource(SplitSource):
    """Options shared by single-file sources (see `SquadSource` for what they mean)."""

    def __init__(
        self,
        path: str | Path,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        seed: int = 0,
        max_examples: int | None = None,
        split_by: str = "group",
        train_ids: str | list[str] | None = None,
        val_ids: str | list[str] | None = None,
        test_ids: str | list[str] | None = None,
        evaluate_all: bool = False,
    ) -> None:
        self.path = Path(path)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.max_examples = max_examples
        self._init_split(split_by, train_ids, val_ids, test_ids, evaluate_all)

    def read(self) -> tuple[Corpus, list[Example]]:  # pragma: no cover - interface
        raise NotImplementedError

    def load(self) -> RAGData:
        """Read the file and split it (see the split options)."""
        corpus, examples = self.read()
        train, val, test = self._divide(
            examples, corpus, self.val_fraction, self.test_fraction, self.seed, str(self.path)
        )
        return limited(corpus, train, val, test, self.max_examples, self.seed)
