"""Hard negatives for the fictional knowledge base: a benchmark where the most similar passage
does not answer (``build_knowledge_base(decoys_per_question=..., answer_distractors_per_question=...)``).

Per question, on top of the person and organisation passages:

* **decoys**: passages about the same person that repeat the question's words (the question
  itself, the person's full name) but never state the fact. A similarity retriever ranks them
  first; a reader given one cannot answer.
* **answer-bearing distractors**: passages about another (invented) person, a relative who
  shares the asked person's last name, stating the *answer string* for the same attribute
  ("Sela Drimen was born in Tornvik."). Matching the answer string (DPR's distant supervision)
  picks them; they are not about the asked person, so they do not support the answer.
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

#: how a distractor states the answer for its own (invented) person, per question attribute
_STATEMENTS = {
    "hometown": ("{other} was born in {answer}.", "{other} is a native of {answer}."),
    "birth_year": ("{other} was born in {answer}.", "{other}'s year of birth is {answer}."),
    "profession": ("{other} works as {a_answer}.", "By trade, {other} is {a_answer}."),
    "employer": ("{other} works for {answer}.", "{other} is employed by {answer}."),
    "instrument": ("{other} plays the {answer}.", "{other} practises the {answer} every evening."),
    "colour": ("{other}'s favourite colour is {answer}.", "{other} likes the colour {answer} best."),
    "pet": ("{other} keeps {a_answer} as a pet.", "{other} has {a_answer} as a pet."),
    "employer.city": ("The employer of {other} was founded in {answer}.",),
    "employer.founded": ("The employer of {other} was founded in {answer}.",),
}
_DISTRACTOR_TAIL = (
    "{other} is a cousin of {name}, and people often mix the two up.",
    "Neighbours sometimes confuse {other} with {name}, a relative from the same family.",
    "{other} and {name} are cousins, though they have not spoken in years.",
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
            values = {"other": other, "answer": answer, "a_answer": _article(answer), "name": name}
            text = " ".join(
                [
                    rng.choice(_STATEMENTS[attr]).format(**values),
                    rng.choice(_DISTRACTOR_TAIL).format(**values),
                ]
            )
            pid = f"distractor-{ex.example_id}-{j}"
            out.append(Passage(pid, other, text, group=pid))
            distractor_ids.append(pid)
        ex.meta["decoys"] = decoy_ids
        ex.meta["answer_distractors"] = distractor_ids
    return out
