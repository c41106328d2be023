"""The built-in fictional knowledge base (the world): invented people and organisations, their
passages and their questions. ``joint_rag.data.synthetic.SyntheticSource`` serves it as data.

Invented people (syllable-generated names) with invented facts, one passage each, plus one
passage per invented organisation they work for. No language model can answer the questions
without reading the passage, answers are one or two words, and it builds any size in
milliseconds with no files, so it suits CPU tests and small experiments.

Hard distractors: a `distractor_fraction` of the people share a first or last name with another
person and copy one of their facts (hometown, profession or employer), so lexical overlap alone
does not pick the right passage. Two-hop questions ("In which city was the employer of X
founded?") need the person's passage and the organisation's passage.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from joint_rag.data.hard_negatives import hard_negatives
from joint_rag.data.types import Corpus, Example, Passage


def _words(text: str) -> list[str]:
    return text.split()


_ONSETS = _words("b d f g k l m n p r s t v z br dr st tr sh th")
_VOWELS = _words("a e i o u a e o a i ei ou")
_CODAS = _words("n r l s m")
_CITY_SUFFIXES = _words("vik port dor holm mere gard stad ford wick ria bury lund")
_ORG_KINDS = _words(
    "Works Guild Foundry Holdings Collective Mills Institute Society Shipyards Press Brewery Atelier"
)

PROFESSIONS = _words(
    "baker cartographer glassblower beekeeper locksmith clockmaker bookbinder potter weaver brewer "
    "astronomer botanist surveyor tailor carpenter chemist librarian cooper stonemason shipwright "
    "perfumer engraver archivist cheesemaker farrier geologist pharmacist architect translator jeweller"
)
COLOURS = _words(
    "crimson teal amber violet ochre indigo scarlet olive turquoise maroon saffron cobalt lilac emerald coral silver"
)
PETS = _words(
    "ferret parrot tortoise hedgehog goldfish rabbit iguana canary hamster gecko chinchilla cockatoo axolotl tarantula lizard pony"
)
INSTRUMENTS = _words(
    "oboe cello harp banjo accordion bassoon clarinet mandolin trombone zither flute viola lute marimba bagpipe harmonica"
)
PRODUCTS = _words(
    "lanterns clocks rope maps glassware textiles ink telescopes barrels bicycles soap paper compasses kites ceramics bells"
)

# Person passage: the first sentence introduces the full name; the rest come in a random order.
_INTRO = (
    "{name} was born in {hometown} in {birth_year}.",
    "Born in {birth_year} in the town of {hometown}, {name} still visits it every summer.",
    "{name} is a native of {hometown}, having been born there in {birth_year}.",
)
_SENTENCES = {
    "work": (
        "{first} works as {a_profession} at {employer}.",
        "By trade {a_profession}, {first} is employed by {employer}.",
        "{first} earns a living as {a_profession} for {employer}.",
    ),
    "instrument": (
        "{first} plays the {instrument} on weekends.",
        "In the evenings {first} practises the {instrument}.",
        "Friends know {first} as a keen {instrument} player.",
    ),
    "colour": (
        "{first}'s favourite colour is {colour}.",
        "{first} is fond of the colour {colour} above all others.",
        "Asked about colours, {first} always names {colour}.",
    ),
    "pet": (
        "{first} keeps {a_pet} as a pet.",
        "At home, {first} looks after a pet {pet}.",
        "{first} shares a small house with {a_pet}.",
    ),
}
_ORG_TEMPLATES = (
    "{org} was founded in {city} in {founded}. The firm is known for its {product}, and its "
    "headquarters still stand in {city}, not far from the old market square. Many of its "
    "workers live nearby and walk to work.",
    "Founded in {founded}, {org} began as a small workshop in {city}. Today it sells {product} "
    "across the region, employs several hundred people, and still keeps its first workshop "
    "open to visitors.",
    "The story of {org} starts in {city}, where it was established in {founded}. It has made "
    "{product} ever since, keeps its archives in the same building, and holds an open day "
    "every spring.",
)
QUESTIONS = {
    "hometown": (
        "Where was {name} born?",
        "In which town was {name} born?",
        "What is the birthplace of {name}?",
    ),
    "birth_year": (
        "In what year was {name} born?",
        "When was {name} born?",
        "What is {name}'s year of birth?",
    ),
    "profession": (
        "What does {name} do for a living?",
        "What is {name}'s profession?",
        "What job does {name} have?",
    ),
    "employer": (
        "Who employs {name}?",
        "Which organisation does {name} work for?",
        "For which company does {name} work?",
    ),
    "instrument": ("Which instrument does {name} play?", "What instrument does {name} practise?"),
    "colour": ("What is {name}'s favourite colour?", "Which colour does {name} like best?"),
    "pet": ("What kind of pet does {name} keep?", "What animal does {name} have as a pet?"),
}
TWO_HOP_QUESTIONS = {
    "city": (
        "In which city was the employer of {name} founded?",
        "Where was the organisation that {name} works for founded?",
        "{name}'s employer was founded in which city?",
    ),
    "founded": (
        "In what year was the employer of {name} founded?",
        "When was the organisation that {name} works for founded?",
    ),
}


@dataclass
class Organisation:
    """An invented organisation (employer); its passage supports two-hop questions."""

    entity_id: str
    name: str
    city: str
    founded: int
    product: str


@dataclass
class Person:
    """An invented person; `twin_of` is the entity whose name part (and one fact) this one shares."""

    entity_id: str
    first: str
    last: str
    hometown: str
    birth_year: int
    profession: str
    employer: str  # an Organisation.entity_id
    instrument: str
    colour: str
    pet: str
    twin_of: str | None = None

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


@dataclass
class KnowledgeBase:
    """People, organisations, the corpus of their passages, and all questions (unsplit)."""

    people: list[Person]
    organisations: list[Organisation]
    corpus: Corpus
    examples: list[Example] = field(default_factory=list)


def _word(rng: random.Random, syllables: int, end_coda: float) -> str:
    """A pronounceable invented word: (consonant(s) + vowel + optional consonant) syllables."""
    parts = []
    for s in range(syllables):
        parts.append(rng.choice(_ONSETS) + rng.choice(_VOWELS))
        if rng.random() < (end_coda if s == syllables - 1 else 0.3):
            parts.append(rng.choice(_CODAS))
    return "".join(parts).capitalize()


def _unique(make, used: set[str]) -> str:
    for _ in range(1000):
        w = make()
        if w not in used:
            used.add(w)
            return w
    raise RuntimeError("could not generate a unique name; the syllable inventory is too small")


def _first_name(rng: random.Random) -> str:
    return _word(rng, 2 if rng.random() < 0.8 else 3, 0.3)


def _last_name(rng: random.Random) -> str:
    return _word(rng, 3 if rng.random() < 0.5 else 2, 0.4)


def article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


#: which question attributes each passage sentence group states (the intro states the first two)
FACT_ATTRIBUTES = {
    "intro": ("hometown", "birth_year"),
    "work": ("profession", "employer"),
    "instrument": ("instrument",),
    "colour": ("colour",),
    "pet": ("pet",),
}


def _person_passage(
    p: Person, org: Organisation, rng: random.Random, facts: tuple[str, ...] | None = None
) -> Passage:
    values = {
        "name": p.name,
        "first": p.first,
        "hometown": p.hometown,
        "birth_year": p.birth_year,
        "a_profession": article(p.profession),
        "employer": org.name,
        "instrument": p.instrument,
        "colour": p.colour,
        "pet": p.pet,
        "a_pet": article(p.pet),
    }
    body = [rng.choice(choices) for key, choices in _SENTENCES.items() if facts is None or key in facts]
    rng.shuffle(body)
    text = " ".join(s.format(**values) for s in [rng.choice(_INTRO), *body])
    return Passage(p.entity_id, p.name, text, group=p.entity_id)


def _org_passage(o: Organisation, rng: random.Random) -> Passage:
    text = rng.choice(_ORG_TEMPLATES).format(org=o.name, city=o.city, founded=o.founded, product=o.product)
    return Passage(o.entity_id, o.name, text, group=o.entity_id)


def _questions(
    p: Person,
    org: Organisation,
    rng: random.Random,
    n: int,
    two_hop_fraction: float,
    facts: tuple[str, ...] | None = None,
) -> list[Example]:
    answers = {
        "hometown": p.hometown,
        "birth_year": str(p.birth_year),
        "profession": p.profession,
        "employer": org.name,
        "instrument": p.instrument,
        "colour": p.colour,
        "pet": p.pet,
    }
    out = []
    two_hop = list(TWO_HOP_QUESTIONS)
    rng.shuffle(two_hop)
    stated = {
        a for key in ("intro", *(facts if facts is not None else _SENTENCES)) for a in FACT_ATTRIBUTES[key]
    }
    askable = [a for a in QUESTIONS if a in stated]
    if "employer" not in stated:
        two_hop = []  # the employer is not stated: no two-hop questions through it
    for k, attr in enumerate(rng.sample(askable, min(n, len(askable)))):
        if two_hop and rng.random() < two_hop_fraction:
            hop = two_hop.pop()
            query = rng.choice(TWO_HOP_QUESTIONS[hop]).format(name=p.name)
            answer = org.city if hop == "city" else str(org.founded)
            gold, hops, attr = [p.entity_id, org.entity_id], 2, f"employer.{hop}"
        else:
            query = rng.choice(QUESTIONS[attr]).format(name=p.name)
            answer, gold, hops = answers[attr], [p.entity_id], 1
        out.append(
            Example(
                query=query,
                answers=[answer],
                gold_passage_ids=gold,
                example_id=f"{p.entity_id}-q{k}",
                hops=hops,
                meta={"entity": p.entity_id, "attribute": attr},
            )
        )
    return out


def build_knowledge_base(
    num_entities: int = 200,
    seed: int = 0,
    two_hop_fraction: float = 0.0,
    distractor_fraction: float = 0.3,
    questions_per_entity: int = 3,
    num_organisations: int | None = None,
    passage_facts: list[str] | None = None,
    decoys_per_question: int = 0,
    answer_distractors_per_question: int = 0,
) -> KnowledgeBase:
    """Generate a fictional knowledge base; the same arguments always give the same data.

    Args:
        num_entities: number of people (each gets one passage and its questions).
        seed: random seed for names, facts, templates and questions.
        two_hop_fraction: probability that a question is replaced by a two-hop question about
            the person's employer (at most two per person; gold = person + organisation).
        distractor_fraction: fraction of people who share a first or last name (and one of
            hometown, profession, employer) with an earlier person.
        questions_per_entity: distinct attributes asked about per person (at most 7).
        num_organisations: number of employers; default `max(2, num_entities // 5)`.
        passage_facts: sentence groups a person passage states besides the intro (hometown and
            birth year): any of "work", "instrument", "colour", "pet"; None states all. Questions
            ask only about stated facts. Fewer facts make shorter, easier-to-compress passages.
        decoys_per_question: passages per question about the same person that repeat the
            question's words without the fact (``joint_rag.data.hard_negatives``).
        answer_distractors_per_question: passages per question about another person (same last
            name) that state the answer string for the same attribute.

    Returns:
        The `KnowledgeBase`: people, organisations, corpus (people first, then organisations,
        then any hard negatives) and the unsplit examples in person order.
    """
    if num_entities < 1:
        raise ValueError(f"num_entities must be >= 1, got {num_entities}")
    facts = None if passage_facts is None else tuple(passage_facts)
    if facts is not None and set(facts) - set(_SENTENCES):
        raise ValueError(
            f"passage_facts: unknown entries {sorted(set(facts) - set(_SENTENCES))}; known: {list(_SENTENCES)}"
        )
    if not 0.0 <= distractor_fraction <= 1.0 or not 0.0 <= two_hop_fraction <= 1.0:
        raise ValueError("distractor_fraction and two_hop_fraction must lie in [0, 1]")
    rng = random.Random(seed)
    n_orgs = num_organisations or max(2, num_entities // 5)
    used: set[str] = set()  # every invented word or full name, so cities, orgs and people never collide
    cities = [
        _unique(lambda: _word(rng, 2, 0.0) + rng.choice(_CITY_SUFFIXES), used)
        for _ in range(max(8, num_entities // 4))
    ]
    orgs = [
        Organisation(
            entity_id=f"org-{j}",
            name=_unique(lambda: f"{_word(rng, 2, 0.6)} {rng.choice(_ORG_KINDS)}", used),
            city=rng.choice(cities),
            founded=rng.randint(1700, 1990),
            product=rng.choice(PRODUCTS),
        )
        for j in range(n_orgs)
    ]
    n_twins = round(distractor_fraction * (num_entities - 1))
    twins = set(rng.sample(range(1, num_entities), n_twins)) if n_twins else set()
    people: list[Person] = []
    for i in range(num_entities):
        p = Person(
            entity_id=f"person-{i}",
            first="",
            last="",
            hometown=rng.choice(cities),
            birth_year=rng.randint(1920, 2005),
            profession=rng.choice(PROFESSIONS),
            employer=rng.choice(orgs).entity_id,
            instrument=rng.choice(INSTRUMENTS),
            colour=rng.choice(COLOURS),
            pet=rng.choice(PETS),
        )
        if i in twins:
            twin = people[rng.randrange(i)]
            p.twin_of = twin.entity_id
            shared = rng.choice(("hometown", "profession", "employer"))
            setattr(p, shared, getattr(twin, shared))
            if rng.random() < 0.5:
                name = _unique(lambda: f"{twin.first} {_last_name(rng)}", used)  # noqa: B023
            else:
                name = _unique(lambda: f"{_first_name(rng)} {twin.last}", used)  # noqa: B023
        else:
            name = _unique(lambda: f"{_first_name(rng)} {_last_name(rng)}", used)
        p.first, p.last = name.split(" ")
        people.append(p)

    by_id = {o.entity_id: o for o in orgs}
    passages = [_person_passage(p, by_id[p.employer], rng, facts) for p in people]
    passages += [_org_passage(o, rng) for o in orgs]
    examples = [
        ex
        for p in people
        for ex in _questions(p, by_id[p.employer], rng, questions_per_entity, two_hop_fraction, facts)
    ]
    source = f"synthetic(num_entities={num_entities}, seed={seed})"
    if decoys_per_question or answer_distractors_per_question:
        names = {p.entity_id: (p.first, p.last) for p in people}
        values = {
            "city": cities,
            "birth_year": [str(y) for y in range(1920, 2006)],  # the ranges the facts are drawn from
            "founding_year": [str(y) for y in range(1700, 1991)],
            "profession": PROFESSIONS,
            "organisation": [o.name for o in orgs],
            "instrument": INSTRUMENTS,
            "colour": COLOURS,
            "pet": PETS,
        }
        passages += hard_negatives(
            examples,
            names,
            _first_name,
            used,
            seed,
            decoys_per_question,
            answer_distractors_per_question,
            values,
        )
        source = (
            f"synthetic(num_entities={num_entities}, seed={seed}, decoys={decoys_per_question}, "
            f"answer_distractors={answer_distractors_per_question})"
        )
    return KnowledgeBase(people, orgs, Corpus(passages, source=source), examples)
