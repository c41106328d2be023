"""Instruction-following data over the fictional knowledge base (``joint_rag.data.knowledge_base``).

Towns group people: "Who was born in {town}?" has several relevant passages, and an instruction
naming a pet narrows them. ``town_instruction_pairs`` gives FollowIR-style evaluation pairs (for
p-MRR, ``joint_rag.instructions``), ``town_instruction_examples`` training examples that need the
instruction, and ``add_instruction_data`` splits the towns between the two for ``SyntheticSource``.
"""

from __future__ import annotations

import random

from joint_rag.data.knowledge_base import KnowledgeBase, Person, article
from joint_rag.data.types import Example, InstructionPair, RAGData


def _people_by_town(kb: KnowledgeBase, towns: list[str]) -> dict[str, list[Person]]:
    """People born in each of ``towns`` whose passages state their pet (error otherwise)."""
    stated = [p.pet in kb.corpus[kb.corpus.index_of(p.entity_id)].text for p in kb.people]
    if not all(stated):
        raise ValueError(
            "the knowledge base's person passages do not all state the pet (built with passage_facts "
            "without 'pet'?): instruction pairs about pets need them"
        )
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


def town_instruction_pairs(kb: KnowledgeBase, towns: list[str], rng: random.Random) -> list[InstructionPair]:
    """FollowIR-style pairs, one per town (in the given order) where at least two people were
    born and not all keep the same pet: query "Who was born in {town}?"; original instruction:
    every person born there is relevant; changed instruction: only those who keep one of their
    pets (chosen with ``rng``); ``changed`` = the people born there with another pet. The
    judgements (grade 1) are everyone born there (original) and those who keep the pet (changed)."""
    pairs = []
    for town, people in _people_by_town(kb, towns).items():
        pets = sorted({p.pet for p in people})
        if len(pets) < 2:
            continue
        pet = rng.choice(pets)
        pairs.append(
            InstructionPair(
                query_id=f"born-in-{town}",
                query=_town_query(town),
                instruction_og=f"Any person born in {town} is relevant.",
                instruction_new=_pet_instruction(town, pet),
                changed=tuple(p.entity_id for p in people if p.pet != pet),
                relevant_og={p.entity_id: 1.0 for p in people},
                relevant_new={p.entity_id: 1.0 for p in people if p.pet == pet},
            )
        )
    return pairs


def town_instruction_examples(kb: KnowledgeBase, towns: list[str]) -> list[Example]:
    """Training examples that need the instruction: for every town of ``towns`` and every pet
    kept there by some but not all people born there, "Who was born in {town}?" with the
    instruction "Only a person born in {town} who keeps {pet} ..."; gold = the people born there
    who keep it (the others born there are the hard negatives); answer = the first one's name."""
    examples = []
    for town, people in _people_by_town(kb, towns).items():
        for pet in sorted({p.pet for p in people}):
            gold = [p for p in people if p.pet == pet]
            if len(gold) == len(people):
                continue
            examples.append(
                Example(
                    query=_town_query(town),
                    answers=[gold[0].name],
                    gold_passage_ids=[p.entity_id for p in gold],
                    instruction=_pet_instruction(town, pet),
                    example_id=f"instruction-{town}-{pet}",
                    meta={"entity": f"town-{town}"},
                )
            )
    return examples


def add_instruction_data(
    data: RAGData, kb: KnowledgeBase, eval_fraction: float, n_examples: int, seed: int
) -> None:
    """Hold out ``eval_fraction`` of the towns (random by ``seed``): their instruction pairs become
    ``data.instruction_pairs``; at most ``n_examples`` instruction examples from the other towns
    join ``data.train``."""
    rng = random.Random(f"instructions-{seed}")
    towns = sorted({p.hometown for p in kb.people})
    rng.shuffle(towns)
    n_eval = round(eval_fraction * len(towns))
    eval_towns, train_towns = sorted(towns[:n_eval]), sorted(towns[n_eval:])
    data.instruction_pairs = town_instruction_pairs(kb, eval_towns, rng)
    pool = town_instruction_examples(kb, train_towns)
    data.train = data.train + rng.sample(pool, min(n_examples, len(pool)))
