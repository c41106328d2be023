"""The fictional knowledge base: determinism, sizes, splits, distractors, answerability."""

import time

import pytest

from joint_rag.data.knowledge_base import build_knowledge_base
from joint_rag.data.splits import group_overlap
from joint_rag.data.synthetic import SyntheticSource


def _signature(kb):
    return [p.full_text() for p in kb.corpus], [(e.query, e.answers, e.gold_passage_ids) for e in kb.examples]


def test_same_seed_same_data_different_seed_different_data():
    assert _signature(build_knowledge_base(50, seed=1)) == _signature(build_knowledge_base(50, seed=1))
    assert _signature(build_knowledge_base(50, seed=1)) != _signature(build_knowledge_base(50, seed=2))


@pytest.mark.parametrize("n", [1, 10, 5000])
def test_sizes_unique_names_and_ids(n):
    start = time.perf_counter()
    kb = build_knowledge_base(n, seed=0, two_hop_fraction=0.3)
    assert time.perf_counter() - start < 2.0
    assert len(kb.people) == n and len(kb.corpus) == n + len(kb.organisations)
    assert len({p.name for p in kb.people}) == n
    assert len(set(kb.corpus.ids)) == len(kb.corpus)
    assert len(kb.examples) == 3 * n


def test_answers_appear_in_gold_passages_and_are_short():
    kb = build_knowledge_base(300, seed=3, two_hop_fraction=0.5, questions_per_entity=7)
    for ex in kb.examples:
        golds = [kb.corpus[kb.corpus.index_of(p)] for p in ex.gold_passage_ids]
        assert ex.answer in golds[-1].text, ex
        assert 1 <= len(ex.answer.split()) <= 2
        assert golds[0].title in ex.query  # the question names the person
    lengths = [len(p.text.split()) for p in kb.corpus]
    assert min(lengths) >= 25 and max(lengths) <= 65


def test_two_hop_questions_use_person_then_organisation():
    kb = build_knowledge_base(100, seed=0, two_hop_fraction=0.5)
    two = [ex for ex in kb.examples if ex.hops == 2]
    assert two and len(two) < len(kb.examples)
    for ex in two:
        person, org = ex.gold_passage_ids
        assert person.startswith("person-") and org.startswith("org-")
        assert kb.corpus[kb.corpus.index_of(org)].title in kb.corpus[kb.corpus.index_of(person)].text
    assert all(ex.hops == 1 for ex in build_knowledge_base(100, seed=0).examples)


def test_hard_distractors_share_name_parts():
    kb = build_knowledge_base(200, seed=0, distractor_fraction=0.3)
    by_id = {p.entity_id: p for p in kb.people}
    twins = [p for p in kb.people if p.twin_of]
    assert len(twins) == round(0.3 * 199)
    for p in twins:
        other = by_id[p.twin_of]
        assert (p.first == other.first) != (p.last == other.last)  # one part shared, never both
    firsts = [p.first for p in kb.people]
    assert len(set(firsts)) < len(firsts)
    assert not any(p.twin_of for p in build_knowledge_base(200, seed=0, distractor_fraction=0.0).people)


def test_template_variety():
    kb = build_knowledge_base(200, seed=0)
    openings = {p.text.split(",")[0].split(" ")[0] for p in kb.corpus if p.passage_id.startswith("person-")}
    assert len(openings) > 3  # "Born ...", names, ...
    assert len({ex.query.split(" ")[0] for ex in kb.examples}) >= 5


@pytest.mark.parametrize("two_hop", [0.0, 0.5])
def test_source_splits_by_entity_and_keeps_all_passages(two_hop):
    data = SyntheticSource(
        num_entities=200, seed=0, val_fraction=0.2, test_fraction=0.1, two_hop_fraction=two_hop
    ).load()
    kb = build_knowledge_base(200, seed=0, two_hop_fraction=two_hop)
    assert data.corpus.ids == kb.corpus.ids
    assert len(data.train) + len(data.val) + len(data.test) == len(kb.examples)
    assert data.val and data.test
    assert not group_overlap(data.train, data.val, data.corpus)
    assert not group_overlap(data.train, data.test, data.corpus)
    assert not group_overlap(data.val, data.test, data.corpus)
    train_entities = {ex.meta["entity"] for ex in data.train}
    assert not train_entities & {ex.meta["entity"] for ex in data.val + data.test}


def test_source_max_examples():
    data = SyntheticSource(num_entities=100, max_examples=20).load()
    assert len(data.train) == 20 and len(data.val) == 20 and data.test == []
