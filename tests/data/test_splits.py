"""Group-disjoint splits and subsampling."""

import pytest

from joint_rag.data.splits import example_components, group_overlap, limit, split_by_group
from joint_rag.data.types import Corpus, DataError, Example, Passage


def _corpus(n_groups: int = 20, per_group: int = 2) -> Corpus:
    return Corpus(
        Passage(f"g{g}-p{i}", "", f"text {g} {i}", group=f"g{g}")
        for g in range(n_groups)
        for i in range(per_group)
    )


def _examples(n_groups: int = 20) -> list[Example]:
    return [
        Example(f"q{g}-{k}", ["a"], [f"g{g}-p{k % 2}"], example_id=f"q{g}-{k}")
        for g in range(n_groups)
        for k in range(3)
    ]


def _groups(examples, corpus):
    return {corpus[corpus.index_of(p)].group_key for ex in examples for p in ex.gold_passage_ids}


def test_split_is_group_disjoint_and_complete():
    corpus, examples = _corpus(), _examples()
    train, val, test = split_by_group(examples, corpus, 0.2, 0.2, seed=0)
    assert len(train) + len(val) + len(test) == len(examples)
    assert val and test and train
    assert not group_overlap(train, val, corpus) and not group_overlap(train, test, corpus)
    assert not group_overlap(val, test, corpus)
    assert abs(len(val) - 0.2 * len(examples)) <= 3  # at most one group (3 examples) over


def test_split_is_deterministic_by_seed_and_keeps_order():
    corpus, examples = _corpus(), _examples()
    a = split_by_group(examples, corpus, 0.3, seed=1)
    b = split_by_group(examples, corpus, 0.3, seed=1)
    c = split_by_group(examples, corpus, 0.3, seed=2)
    assert [[e.example_id for e in s] for s in a] == [[e.example_id for e in s] for s in b]
    assert _groups(a[1], corpus) != _groups(c[1], corpus)
    assert a[2] == []
    order = [e.example_id for e in examples]
    assert [e.example_id for e in a[0]] == [i for i in order if i in {e.example_id for e in a[0]}]


def test_multi_gold_examples_join_their_groups():
    corpus = _corpus(4)
    examples = [
        Example("a", [], ["g0-p0", "g1-p0"]),  # joins g0 and g1
        Example("b", [], ["g1-p1"]),
        Example("c", [], ["g2-p0"]),
        Example("d", [], ["g3-p0"]),
        Example("e", [], []),  # no gold: its own component
    ]
    comps = example_components(examples, corpus)
    assert comps[0] == comps[1] and len(set(comps)) == 4
    for seed in range(10):
        train, val, _ = split_by_group(examples, corpus, 0.4, seed=seed)
        assert not group_overlap(train, val, corpus)
        assert (examples[0] in train) == (examples[1] in train)


def test_split_errors():
    corpus = _corpus(2)
    with pytest.raises(ValueError, match="add up"):
        split_by_group(_examples(2), corpus, 0.6, 0.5)
    with pytest.raises(DataError, match="nope"):
        split_by_group([Example("q", [], ["nope"])], corpus, 0.2)


def test_limit():
    examples = _examples()
    assert limit(examples, None) == examples and limit(examples, 1000) == examples
    sub = limit(examples, 10, seed=3)
    assert len(sub) == 10 and sub == limit(examples, 10, seed=3)
    assert [examples.index(e) for e in sub] == sorted(examples.index(e) for e in sub)
    assert limit(examples, 10, seed=4) != sub
