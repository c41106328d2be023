"""Train/val/test splits (group-disjoint at random, in file order, or by listed ids) and
deterministic subsampling.

Evaluation questions must be about groups (articles, entities) that no training question is
about, otherwise a retriever can memorise passage ids instead of learning to retrieve. An
example's groups are the `group_key`s of its gold passages; examples whose gold passages lie in
different groups join those groups into one component (union-find), and whole components are
assigned to a split (`split_by_group`, the default of every source). `split_by_order` and
`split_by_ids` take the split as given (a published split, or one made elsewhere): they do not
check group overlap (`group_overlap` does).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from joint_rag.data.types import Corpus, DataError, Example


class _UnionFind:
    """Minimal union-find over hashable keys (path halving, union by size)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.size: dict[str, int] = {}

    def find(self, x: str) -> str:
        if x not in self.parent:
            self.parent[x], self.size[x] = x, 1
            return x
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]


def example_components(examples: Sequence[Example], corpus: Corpus) -> list[str]:
    """Component key of each example: examples sharing any gold group share a component.

    Examples without gold passages form a component of their own.

    Args:
        examples: the examples to group.
        corpus: the corpus their gold passage ids refer to.

    Returns:
        One component key per example, in example order.

    Raises:
        DataError: if an example names a gold passage missing from `corpus`.
    """
    uf = _UnionFind()
    firsts: list[str] = []
    for n, ex in enumerate(examples):
        groups = ["group:" + corpus[corpus.index_of(pid)].group_key for pid in ex.gold_passage_ids]
        if not groups:
            groups = [f"example:{n}"]
        for g in groups[1:]:
            uf.union(groups[0], g)
        firsts.append(groups[0])
    return [uf.find(g) for g in firsts]


def split_by_group(
    examples: Sequence[Example],
    corpus: Corpus,
    val_fraction: float,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> tuple[list[Example], list[Example], list[Example]]:
    """Split examples into train/val/test so that no group straddles two splits.

    Components (see `example_components`) are shuffled with `seed`, then filled into test
    and val until each holds at least its fraction of the examples; the rest is train. A
    split with a fraction > 0 receives at least one component when any is left. Examples keep
    their input order within each split.

    Args:
        examples: the examples to split.
        corpus: the corpus the gold passage ids refer to (for the groups).
        val_fraction: target fraction of examples in val, in [0, 1).
        test_fraction: target fraction of examples in test, in [0, 1).
        seed: shuffling seed; the same seed gives the same split.

    Returns:
        (train, val, test) lists of examples.

    Raises:
        ValueError: if a fraction is negative or the two add up to 1 or more.
        DataError: if an example names a gold passage missing from `corpus`.
    """
    _check_fractions(val_fraction, test_fraction)
    comps = example_components(examples, corpus)
    sizes: dict[str, int] = {}
    for c in comps:
        sizes[c] = sizes.get(c, 0) + 1
    order = sorted(sizes)  # deterministic starting order, independent of dict/hash order
    random.Random(seed).shuffle(order)

    total = len(examples)
    targets = [("test", test_fraction * total), ("val", val_fraction * total)]
    assign: dict[str, str] = {}
    it = iter(order)
    for name, target in targets:
        filled = 0
        if target <= 0:
            continue
        for c in it:
            assign[c] = name
            filled += sizes[c]
            if filled >= target:
                break
    out: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
    for ex, c in zip(examples, comps):
        out[assign.get(c, "train")].append(ex)
    return out["train"], out["val"], out["test"]


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be >= 0 and add up "
            "to less than 1 (the rest is train)"
        )


def split_by_order(
    examples: Sequence[Example], val_fraction: float, test_fraction: float = 0.0
) -> tuple[list[Example], list[Example], list[Example]]:
    """Split examples in their input (file) order: train first, then val, then test.

    Val gets ``round(val_fraction * n)`` examples and test ``round(test_fraction * n)``; train
    keeps the rest. Groups are not kept apart (the order is taken as given).

    Args:
        examples: the examples, in the order to cut.
        val_fraction: fraction of examples in val, in [0, 1).
        test_fraction: fraction of examples in test, in [0, 1).

    Returns:
        (train, val, test) lists of examples.

    Raises:
        ValueError: if a fraction is negative or the two add up to 1 or more.
    """
    _check_fractions(val_fraction, test_fraction)
    n = len(examples)
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    n_train = n - n_val - n_test
    items = list(examples)
    return items[:n_train], items[n_train : n_train + n_val], items[n_train + n_val :]


IdList = list[tuple[str, str]]
"""Listed example ids, each with where it was listed (``ids.txt:3``, ``val_ids[2]``) for messages."""


def split_by_ids(
    examples: Sequence[Example],
    train_ids: IdList | None,
    val_ids: IdList | None,
    test_ids: IdList | None,
    source: str = "<data>",
) -> tuple[list[Example], list[Example], list[Example]]:
    """Split examples by listed example ids ("these ids train, those evaluate").

    Each listed id goes to its split. Examples listed nowhere train when ``train_ids`` is None;
    when ``train_ids`` is given, every example must be listed. Examples keep their input order
    within each split. Groups are not kept apart (the lists are taken as given).

    Args:
        examples: the examples to split (their ``example_id``s must be unique).
        train_ids: ids for train, or None (train takes every unlisted example).
        val_ids: ids for val, or None (val is empty).
        test_ids: ids for test, or None (test is empty).
        source: the data's file or folder, for messages.

    Returns:
        (train, val, test) lists of examples.

    Raises:
        DataError: naming the list entry of an id that is not in the data or listed twice, the
            example id two examples share, or (with ``train_ids`` given) an unlisted example.
    """
    first: dict[str, int] = {}
    for n, ex in enumerate(examples):
        if ex.example_id in first:
            raise DataError(
                f"{source}: example id {ex.example_id!r} belongs to examples {first[ex.example_id]} and {n}; "
                "ids must be unique to split by ids"
            )
        first[ex.example_id] = n
    assign: dict[str, tuple[str, str]] = {}  # example id -> (split, where it was listed)
    for name, ids in (("train", train_ids), ("val", val_ids), ("test", test_ids)):
        for example_id, where in ids or []:
            if example_id not in first:
                raise DataError(
                    f"{where}: example id {example_id!r} ({name}_ids) is not in {source}; "
                    "list only ids of the data's examples"
                )
            if example_id in assign:
                other, other_where = assign[example_id]
                raise DataError(
                    f"{where}: example id {example_id!r} is listed for {name} and for {other} "
                    f"({other_where}); list each id once"
                )
            assign[example_id] = (name, where)
    out: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
    for ex in examples:
        split = assign.get(ex.example_id, (None, ""))[0]
        if split is None:
            if train_ids is not None:
                raise DataError(
                    f"{source}: example {ex.example_id!r} is in none of train_ids, val_ids, test_ids; "
                    "list it, or leave train_ids unset so that unlisted examples train"
                )
            split = "train"
        out[split].append(ex)
    return out["train"], out["val"], out["test"]


def limit(examples: Sequence[Example], n: int | None, seed: int = 0) -> list[Example]:
    """At most `n` examples, a random subset chosen by `seed`, kept in input order.

    Args:
        examples: the examples to subsample.
        n: how many to keep; None (or n >= len) keeps all.
        seed: subsampling seed.

    Returns:
        The kept examples, in their original order.
    """
    if n is None or n >= len(examples):
        return list(examples)
    if n < 0:
        raise ValueError(f"limit: n must be >= 0 or None, got {n}")
    keep = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in keep]


def group_overlap(a: Sequence[Example], b: Sequence[Example], corpus: Corpus) -> set[str]:
    """Groups named by gold passages of both `a` and `b` (empty when the splits are disjoint)."""

    def groups(xs: Sequence[Example]) -> set[str]:
        return {corpus[corpus.index_of(pid)].group_key for ex in xs for pid in ex.gold_passage_ids}

    return groups(a) & groups(b)
