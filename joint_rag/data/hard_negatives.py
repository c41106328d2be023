"""Hard negatives for the fictional knowledge base: a benchmark where the most similar passage
does not answer (``build_knowledge_base(decoys_per_question=..., answer_distractors_per_question=...)``).

Per question, on top of the person and organisation passages:

* **decoys**: passages about the same person that repeat the question's words (the question
  itself, the person's full name) but never state the fact. A similarity retriever ranks them
  first; a reader given one cannot answer.
* **answer-bearing distractors**: passages about another (invented) person, a cousin who
  shares the asked person's last name and is introduced with the asked person's full name, that
  hold the *answer string* in another role and state a different value for the asked attribute
  ("Sela Drimen runs a shop in Tornvik, though Sela Drimen was born in Brenmere. Sela Drimen is
  a cousin of Kavo Drimen."). Matching the answer string (DPR's distant supervision) picks
  them, and they look like the question; they do not support the answer, and a reader that
  trusts them gives the cousin's value instead.
* **bridge questions** are the knowledge base's two-hop questions (``two_hop_fraction``): the
  organisation passage they need does not mention the person asked about.

Decoys join the asked person's group (so splits keep them with the person); each distractor is
its own group. Nothing here changes the base knowledge base: the passages come from their own
random stream, seeded by the knowledge base's seed, and are appended after it.
"""

from __future__ import annotations

import random
import re

from joint_rag.data.types import Example, Passage

_DECOYS = (
    "{question} Fans of {name} ask it often, and {first} has always politely declined to say.",
    "People who meet {name} tend to ask the same thing: {question} {first} smiles and talks about "
    "something else.",
    '"{question}" was once a quiz question about {name}; nobody at the table knew, and {first} was '
    "not there to settle it.",
    "A magazine profile of {name} set out to answer one question: {question} The piece was never finished.",
    "{name} gets asked this a lot. {question} Even close friends of {first} admit they do not know.",
)

#: a distractor per question attribute: the answer string in another role, and the cousin's own
#: value (``{value}``, never the answer) for the asked attribute
_STATEMENTS = {
    "hometown": (
        "{other} runs a shop in {answer}, though {other} was born in {value}.",
        "{other} moved to {answer} years ago; {other} is a native of {value}.",
    ),
    "birth_year": (
        "{other} moved house in {answer}; {other} was born in {value}.",
        "{other} married in {answer}, and {other}'s year of birth is {value}.",
    ),
    "profession": (
        "{other} once trained to be {a_answer}, but {other} works as {a_value}.",
        "{other} shares a flat with {a_answer}; by trade, {other} is {a_value}.",
    ),
    "employer": (
        "{other} once applied to {answer}, but {other} works for {value}.",
        "{other} buys supplies from {answer} and is employed by {value}.",
    ),
    "instrument": (
        "{other} sold an old {answer} last year and plays the {value}.",
        "{other} cannot stand the {answer} and practises the {value} every evening.",
    ),
    "colour": (
        "{other} painted the front door {answer}, but {other}'s favourite colour is {value}.",
        "{other} owns {a_answer} coat and likes the colour {value} best.",
    ),
    "pet": (
        "{other} is afraid of the neighbours' {answer} and keeps {a_value} as a pet.",
        "{other} once looked after a friend's {answer}; at home {other} has {a_value} as a pet.",
    ),
    "employer.city": (
        "The employer of {other} has a depot in {answer} but was founded in {value}.",
        "The employer of {other} opened an office in {answer}; it was founded in {value}.",
    ),
    "employer.founded": (
        "The employer of {other} opened a second shop in {answer}; it was founded in {value}.",
        "The employer of {other} had a record year in {answer}; it was founded in {value}.",
    ),
}
#: which value pool (``hard_negatives(values=...)``) each attribute's competing value comes from
POOLS = {
    "hometown": "city",
    "birth_year": "birth_year",
    "profession": "profession",
    "employer": "organisation",
    "instrument": "instrument",
    "colour": "colour",
    "pet": "pet",
    "employer.city": "city",
    "employer.founded": "founding_year",
}
_DISTRACTOR_TAIL = (
    '{other} is a cousin of {name}, and people who ask "{question}" often mix the two up.',
    'Neighbours asked "{question}" sometimes confuse {name} with {other}, a cousin.',
    '{other} and {name} are cousins; "{question}" is a question both of them get.',
)


def contains_answer(text: str, answers: list[str]) -> bool:
    """True if some answer string occurs in ``text`` as whole words (case-insensitive): the
    answer-string match of DPR's distant supervision."""
    low = text.lower()
    return any(re.search(rf"(?<!\w){re.escape(a.lower())}(?!\w)", low) for a in answers if a)


def _article(word: str) -> str:
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def hard_negatives(
    examples: list[Example],
    names: dict[str, tuple[str, str]],
    new_first_name,
    used: set[str],
    seed: int,
    decoys_per_question: int,
    answer_distractors_per_question: int,
    values: dict[str, list[str]],
) -> list[Passage]:
    """Decoy and answer-bearing distractor passages for each example (see the module doc).

    Args:
        examples: the knowledge base's questions (their ``meta`` has ``entity`` and ``attribute``).
        names: entity id -> (first, last) name of each person.
        new_first_name: ``rng -> str``, an invented first name.
        used: every invented word or full name so far (extended with the distractors' names).
        seed: the knowledge base's seed.
        decoys_per_question: decoys per question (at most ``len(_DECOYS)``).
        answer_distractors_per_question: distractors per question.
        values: the knowledge base's value pools (``POOLS``' names -> values), from which a
            distractor draws its cousin's own value for the asked attribute.

    Returns:
        The passages, in example order; every example's ``meta`` gains ``decoys`` and
        ``answer_distractors``, the ids of its own.
    """
    if not 0 <= decoys_per_question <= len(_DECOYS):
        raise ValueError(f"decoys_per_question must lie in [0, {len(_DECOYS)}], got {decoys_per_question}")
    if answer_distractors_per_question < 0:
        raise ValueError(
            f"answer_distractors_per_question must be >= 0, got {answer_distractors_per_question}"
        )
    rng = random.Random(f"hard-negatives-{seed}")
    out: list[Passage] = []
    for ex in examples:
        entity, attr = ex.meta["entity"], ex.meta["attribute"]
        first, last = names[entity]
        name = f"{first} {last}"
        decoy_ids = []
        for j, template in enumerate(rng.sample(_DECOYS, decoys_per_question)):
            text = template.format(question=ex.query, name=name, first=first)
            if contains_answer(text, ex.answers):  # an answer that is a common word: drop it
                continue
            pid = f"decoy-{ex.example_id}-{j}"
            out.append(Passage(pid, name, text, group=entity))
            decoy_ids.append(pid)
        distractor_ids = []
        for j in range(answer_distractors_per_question):
            other_first = None
            for _ in range(1000):
                candidate = new_first_name(rng)
                if f"{candidate} {last}" not in used:
                    other_first = candidate
                    used.add(f"{candidate} {last}")
                    break
            if other_first is None:
                raise RuntimeError(
                    "could not invent a unique relative's name; the syllable inventory is too small"
                )
            other = f"{other_first} {last}"
            answer = ex.answer
            value = rng.choice([v for v in values[POOLS[attr]] if v.lower() != answer.lower()])
            fields = {
                "other": other,
                "answer": answer,
                "a_answer": _article(answer),
                "value": value,
                "a_value": _article(value),
                "name": name,
                "question": ex.query,
            }
            text = " ".join(
                [
                    rng.choice(_STATEMENTS[attr]).format(**fields),
                    rng.choice(_DISTRACTOR_TAIL).format(**fields),
                ]
            )
            pid = f"distractor-{ex.example_id}-{j}"
            out.append(Passage(pid, other, text, group=pid))
            distractor_ids.append(pid)
        ex.meta["decoys"] = decoy_ids
        ex.meta["answer_distractors"] = distractor_ids
    return out
