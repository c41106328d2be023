"""A LIMIT-style generator (Weller et al. 2025): people who like things, queries "Who likes X?"
with exactly two relevant people, the pairs chosen to cover as many top-2 combinations as the
query count allows.

Names are invented (the knowledge base's syllables) and liked things are this module's own
adjective + noun combinations ("Amber Kites"), never LIMIT's attributes, so training on it and
evaluating on LIMIT-small does not leak. Construction, seeded: n people; q distinct pairs of
people drawn from all C(n, 2) (all of them when q >= C(n, 2), cycling); every query gets a fresh
thing that exactly its two people like; each person's document lists everything they like, in a
random order ("{Name} likes A, B, C."), plus ``extra_likes`` things nobody is asked about (LIMIT's
documents also like unqueried things). ``LimitStyleSource`` splits the queries into
train/val/test (the documents are shared, as in LIMIT: the corpus is fixed, the queries differ).
"""

from __future__ import annotations

import itertools
import random

from joint_rag.data.knowledge_base import _first_name, _last_name, _unique
from joint_rag.data.types import Corpus, DataSource, Example, Passage, RAGData

_ADJECTIVES = (
    "Amber Azure Brass Bronze Cedar Chalk Cobalt Copper Coral Crystal Dusky Ember Fern Frost Gilded "
    "Granite Hazel Indigo Ivory Jade Juniper Lunar Maple Marble Misty Moss Ochre Opal Pearl Pewter Quartz "
    "Russet Sable Saffron Scarlet Silver Slate Smoky Solar Tawny Teal Thistle Umber Velvet Willow"
)
ADJECTIVES = _ADJECTIVES.split()
_NOUNS = (
    "Anchors Arches Barges Beacons Bellows Bridges Buttons Candles Canoes Carousels Compasses Corridors "
    "Courtyards Crates Domes Easels Fountains Gables Gazebos Harbours Hammocks Kites Ladders Lanterns "
    "Lighthouses Looms Meadows Mills Orchards Pavilions Quarries Quills Rafts Sails Sundials Terraces "
    "Thimbles Towers Trellises Tunnels Vanes Verandas Wagons Wells Windmills"
)
NOUNS = _NOUNS.split()


def things(rng: random.Random) -> list[str]:
    """Every adjective + noun combination, shuffled (about 2,000)."""
    out = [f"{a} {n}" for a in ADJECTIVES for n in NOUNS]
    rng.shuffle(out)
    return out


class LimitStyleSource(DataSource):
    """See the module docstring.

    Args:
        num_people: n documents.
        num_queries: q queries (two relevant people each).
        extra_likes: unqueried things each person also likes.
        val_fraction: fraction of the queries for validation.
        test_fraction: fraction of the queries for test.
        seed: everything random.
    """

    def __init__(
        self,
        num_people: int = 46,
        num_queries: int = 1000,
        extra_likes: int = 4,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        seed: int = 0,
    ) -> None:
        if num_people < 3:
            raise ValueError(f"num_people must be >= 3, got {num_people}")
        if num_queries < 1 or extra_likes < 0:
            raise ValueError("num_queries must be >= 1 and extra_likes >= 0")
        if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
            raise ValueError("val_fraction and test_fraction must be >= 0 and sum below 1")
        self.num_people = num_people
        self.num_queries = num_queries
        self.extra_likes = extra_likes
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed

    def build(self) -> tuple[Corpus, list[Example]]:
        rng = random.Random(f"limit-style-{self.seed}")
        used: set[str] = set()
        names = [
            f"{_unique(lambda: _first_name(rng), used)} {_last_name(rng)}" for _ in range(self.num_people)
        ]
        pool = things(rng)
        needed = self.num_queries + self.extra_likes * self.num_people
        if needed > len(pool):
            raise ValueError(
                f"{needed} liked things needed but the generator has {len(pool)}; lower num_queries or extra_likes"
            )
        all_pairs = list(itertools.combinations(range(self.num_people), 2))
        pairs: list[tuple[int, int]] = []
        while len(pairs) < self.num_queries:  # every combination once before any repeats
            block = list(all_pairs)
            rng.shuffle(block)
            pairs += block[: self.num_queries - len(pairs)]
        likes: list[list[str]] = [[] for _ in names]
        examples = []
        for qi, (a, b) in enumerate(pairs):
            thing = pool[qi]
            likes[a].append(thing)
            likes[b].append(thing)
            examples.append(
                Example(
                    query=f"Who likes {thing}?",
                    answers=[names[a], names[b]],
                    gold_passage_ids=[names[a], names[b]],
                    example_id=f"limit-style-{qi}",
                    meta={"entity": f"query-{qi}"},
                )
            )
        extra = iter(pool[self.num_queries :])
        passages = []
        for person, liked in zip(names, likes):
            liked = liked + [next(extra) for _ in range(self.extra_likes)]
            rng.shuffle(liked)
            passages.append(Passage(person, "", f"{person} likes {', '.join(liked)}.", group=person))
        return Corpus(
            passages, source=f"limit_style(num_people={self.num_people}, seed={self.seed})"
        ), examples

    def load(self) -> RAGData:
        corpus, examples = self.build()
        rng = random.Random(f"limit-style-split-{self.seed}")
        order = list(range(len(examples)))
        rng.shuffle(order)
        n_val, n_test = round(self.val_fraction * len(order)), round(self.test_fraction * len(order))
        pick = lambda idx: [examples[i] for i in sorted(idx)]  # noqa: E731
        return RAGData(
            corpus,
            train=pick(order[n_val + n_test :]),
            val=pick(order[:n_val]),
            test=pick(order[n_val : n_val + n_test]),
        )
