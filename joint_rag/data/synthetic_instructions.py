"""Instruction-following data over the fictional knowledge base (``joint_rag.data.knowledge_base``).

Towns group people: "Who was born in {town}?" has several relevant passages, and an instruction
narrows them. Instruction families (``FAMILIES``), each a filter on one stated fact:

    pet             "Only a person born in {town} who keeps {a cat} as a pet is relevant."
    employer        "... who works for {Organisation} ..."
    instrument      "... who plays the {oboe} ..."
    profession      "... who works as {a baker} ..."
    birth_years     "Only a person born in {town} between {1950} and {1959} is relevant."
    not_instrument  "... who does not play the {oboe} ..." (a negation)

A family's value qualifies for a town when it keeps some but not all of the people born there.
``town_instruction_pairs`` gives FollowIR-style evaluation pairs (for p-MRR and nDCG@10,
``joint_rag.instructions``; ``InstructionPair.family`` names the family), ``town_instruction_examples``
training examples that need the instruction (one per town, family and qualifying value), and
``add_instruction_data`` splits the towns between the two for ``SyntheticSource``, with seen
(training) and unseen (evaluation-only) families and a fixed number of instruction exposures.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from joint_rag.data.knowledge_base import KnowledgeBase, Person, article
from joint_rag.data.types import Example, InstructionPair, RAGData

#: family -> the passage facts (``build_knowledge_base(passage_facts=)``) its filter needs
FAMILIES: dict[str, str | None] = {
    "pet": "pet",
    "employer": "work",
    "instrument": "instrument",
    "profession": "work",
    "birth_years": None,  # the intro sentence always states the birth year
    "not_instrument": "instrument",
}

Filter = tuple[str, str, Callable[[Person], bool]]  # (value, instruction, keeps)


def _stated(kb: KnowledgeBase, family: str) -> None:
    """Refuse a family whose fact the person passages do not all state."""
    fact = FAMILIES[family]
    if fact is None:
        return
    values = {
        "pet": lambda p: p.pet,
        "work": lambda p: p.profession,
        "instrument": lambda p: p.instrument,
    }[fact]
    text = {p.passage_id: p.text for p in kb.corpus}
    if not all(values(p) in text[p.entity_id] for p in kb.people):
        raise ValueError(
            f"the knowledge base's person passages do not all state the {fact} (built with passage_facts "
            f"without {fact!r}?): instruction family {family!r} needs it"
        )


def _check_families(families: Sequence[str]) -> None:
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown instruction families {unknown}; known: {list(FAMILIES)}")


def _people_by_town(kb: KnowledgeBase, towns: list[str]) -> dict[str, list[Person]]:
    wanted = set(towns)
    by_town: dict[str, list[Person]] = {t: [] for t in towns}
    for person in kb.people:
        if person.hometown in wanted:
            by_town[person.hometown].append(person)
    return by_town


def _town_query(town: str) -> str:
    return f"Who was born in {town}?"


def _pet_instruction(town: str, pet: str) -> str:
    return f"Only a person born in {town} who keeps {article(pet)} as a pet is relevant."


def _filters(kb: KnowledgeBase, family: str, town: str, people: list[Person]) -> list[Filter]:
    """Every qualifying (value, instruction, keeps) of one family for one town, values sorted."""
    who = f"Only a person born in {town}"
    if family == "pet":
        out = [
            (v, _pet_instruction(town, v), lambda p, v=v: p.pet == v) for v in sorted({p.pet for p in people})
        ]
    elif family == "employer":
        names = {o.entity_id: o.name for o in kb.organisations}
        out = [
            (v, f"{who} who works for {names[v]} is relevant.", lambda p, v=v: p.employer == v)
            for v in sorted({p.employer for p in people})
        ]
    elif family == "instrument":
        out = [
            (v, f"{who} who plays the {v} is relevant.", lambda p, v=v: p.instrument == v)
            for v in sorted({p.instrument for p in people})
        ]
    elif family == "profession":
        out = [
            (v, f"{who} who works as {article(v)} is relevant.", lambda p, v=v: p.profession == v)
            for v in sorted({p.profession for p in people})
        ]
    elif family == "birth_years":
        decades = sorted({p.birth_year // 10 * 10 for p in people})
        out = [
            (str(d), f"{who} between {d} and {d + 9} is relevant.", lambda p, d=d: d <= p.birth_year <= d + 9)
            for d in decades
        ]
    else:  # not_instrument
        out = [
            (v, f"{who} who does not play the {v} is relevant.", lambda p, v=v: p.instrument != v)
            for v in sorted({p.instrument for p in people})
        ]
    return [f for f in out if 0 < sum(map(f[2], people)) < len(people)]


def town_instruction_pairs(
    kb: KnowledgeBase, towns: list[str], rng: random.Random, families: Sequence[str] = ("pet",)
) -> list[InstructionPair]:
    """FollowIR-style pairs, one per town (in the given order) and family with a qualifying
    value (chosen with ``rng``): query "Who was born in {town}?"; original instruction: every
    person born there is relevant; changed instruction: the family's filter; ``changed`` = the
    people born there it drops. Judgements (grade 1): everyone born there (original), the kept
    ones (changed). Ids ``{family}:born-in-{town}``."""
    _check_families(families)
    for family in families:
        _stated(kb, family)
    pairs = []
    for town, people in _people_by_town(kb, towns).items():
        for family in families:
            options = _filters(kb, family, town, people)
            if not options:
                continue
            _, instruction, keeps = rng.choice(options)
            pairs.append(
                InstructionPair(
                    query_id=f"{family}:born-in-{town}",
                    query=_town_query(town),
                    instruction_og=f"Any person born in {town} is relevant.",
                    instruction_new=instruction,
                    changed=tuple(p.entity_id for p in people if not keeps(p)),
                    relevant_og={p.entity_id: 1.0 for p in people},
                    relevant_new={p.entity_id: 1.0 for p in people if keeps(p)},
                    family=family,
                )
            )
    return pairs


def town_instruction_examples(
    kb: KnowledgeBase, towns: list[str], families: Sequence[str] = ("pet",)
) -> list[Example]:
    """Training examples that need the instruction: for every town of ``towns``, family and
    qualifying value, "Who was born in {town}?" with the family's instruction; gold = the people
    born there it keeps (the others born there are the hard negatives); answer = the first one's
    name; ``meta["family"]`` names the family."""
    _check_families(families)
    for family in families:
        _stated(kb, family)
    examples = []
    for town, people in _people_by_town(kb, towns).items():
        for family in families:
            for value, instruction, keeps in _filters(kb, family, town, people):
                gold = [p for p in people if keeps(p)]
                examples.append(
                    Example(
                        query=_town_query(town),
                        answers=[gold[0].name],
                        gold_passage_ids=[p.entity_id for p in gold],
                        instruction=instruction,
                        example_id=f"instruction-{family}-{town}-{value}",
                        meta={"entity": f"town-{town}", "family": family},
                    )
                )
    return examples


def add_instruction_data(
    data: RAGData,
    kb: KnowledgeBase,
    eval_fraction: float,
    n_examples: int,
    seed: int,
    families: Sequence[str] = ("pet",),
    eval_families: Sequence[str] | None = None,
    exposures: int | None = None,
) -> None:
    """Hold out ``eval_fraction`` of the towns (random by ``seed``): their instruction pairs of
    ``eval_families`` (default: ``families``; list seen ones too to compare) become
    ``data.instruction_pairs``;
    ``n_examples`` distinct instruction examples of ``families`` from the other towns join
    ``data.train`` (``data.instruction_families`` records which families training saw).

    ``exposures``: None adds the ``n_examples`` once each (so N also sets how often instruction
    examples are seen). An integer E adds exactly E instruction examples whatever N is: the N
    distinct ones cycled in a seeded order (each at most once more than another), so a grid
    over N at fixed steps holds exposure fixed and varies only the count of distinct examples.
    N = 0 with E > 0 is refused (nothing to repeat).

    Raises:
        ValueError: more examples asked for than the training towns have.
    """
    rng = random.Random(f"instructions-{seed}")
    towns = sorted({p.hometown for p in kb.people})
    rng.shuffle(towns)
    n_eval = round(eval_fraction * len(towns))
    eval_towns, train_towns = sorted(towns[:n_eval]), sorted(towns[n_eval:])
    eval_families = list(families) if eval_families is None else list(eval_families)
    data.instruction_pairs = town_instruction_pairs(kb, eval_towns, rng, eval_families)
    data.instruction_families = tuple(families)
    if exposures is None:
        pool = town_instruction_examples(kb, train_towns, families)
        data.train = data.train + rng.sample(pool, min(n_examples, len(pool)))
        return
    if exposures < 0:
        raise ValueError(f"instruction_exposures must be >= 0, got {exposures}")
    if exposures and not n_examples:
        raise ValueError("instruction_exposures > 0 needs instruction_examples > 0 (nothing to repeat)")
    pool = town_instruction_examples(kb, train_towns, families)
    if n_examples > len(pool):
        raise ValueError(
            f"instruction_examples = {n_examples} but the {len(train_towns)} training towns have {len(pool)} "
            f"distinct examples of families {list(families)}; raise num_entities or add families"
        )
    chosen = rng.sample(pool, n_examples) if n_examples else []
    cycled = []
    while len(cycled) < exposures:
        order = list(chosen)
        rng.shuffle(order)
        cycled += order[: exposures - len(cycled)]
    data.train = data.train + cycled
