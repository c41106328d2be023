"""The LIMIT-style generator (``joint_rag.data.limit_style``): two relevant people per query,
top-2 combinations covered, seeded, and none of LIMIT's own attributes."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest

from joint_rag.data.limit_style import LimitStyleSource

LIMIT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "limit-small"


def test_each_thing_is_liked_by_exactly_its_two_people():
    data = LimitStyleSource(num_people=12, num_queries=40, extra_likes=3, seed=1).load()
    examples = data.train + data.val + data.test
    assert len(data.corpus) == 12 and len(examples) == 40 and len(data.val) == 4
    for ex in examples:
        thing = ex.query.removeprefix("Who likes ").removesuffix("?")
        likers = {
            p.passage_id
            for p in data.corpus
            if thing in p.text.split(" likes ", 1)[1].rstrip(".").split(", ")
        }
        assert likers == set(ex.gold_passage_ids) and len(likers) == 2
    assert len({frozenset(ex.gold_passage_ids) for ex in examples}) == 40  # 40 <= C(12, 2): all distinct
    assert (
        data.corpus.ids
        == LimitStyleSource(num_people=12, num_queries=40, extra_likes=3, seed=1).load().corpus.ids
    )


def test_more_queries_than_pairs_cover_every_pair():
    data = LimitStyleSource(num_people=6, num_queries=20, val_fraction=0.0).load()
    counts = Counter(frozenset(ex.gold_passage_ids) for ex in data.train)
    assert set(counts) == {frozenset(p) for p in itertools.combinations(data.corpus.ids, 2)}  # all 15
    assert max(counts.values()) - min(counts.values()) <= 1
    with pytest.raises(ValueError, match="liked things needed"):
        LimitStyleSource(num_people=46, num_queries=5000).load()


@pytest.mark.skipif(not LIMIT.is_dir(), reason=f"LIMIT-small ({LIMIT}) is absent")
def test_no_limit_attribute_is_reused():
    asked = {
        json.loads(line)["text"].removeprefix("Who likes ").removesuffix("?").lower()
        for line in (LIMIT / "queries.jsonl").read_text().splitlines()
    }
    ours = LimitStyleSource(num_people=46, num_queries=1000).load()
    mine = {ex.query.removeprefix("Who likes ").removesuffix("?").lower() for ex in ours.train + ours.val}
    assert not mine & asked
