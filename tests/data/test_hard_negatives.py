"""The usefulness benchmark's hard negatives (``joint_rag.data.hard_negatives``): decoys that
repeat the question without the fact, answer-bearing distractors, oracle candidate lists, and
the distant-supervision metric of the usefulness gap."""

from __future__ import annotations

import pytest

from joint_rag.data.hard_negatives import contains_answer
from joint_rag.data.knowledge_base import build_knowledge_base
from joint_rag.data.synthetic import SyntheticSource
from joint_rag.gap import question_metrics

HARD = dict(two_hop_fraction=0.3, decoys_per_question=2, answer_distractors_per_question=2)


def test_every_question_gets_its_decoys_and_distractors():
    kb = build_knowledge_base(40, seed=1, **HARD)
    corpus = kb.corpus
    assert len(corpus) == 40 + 8 + len(kb.examples) * 4
    names = {p.entity_id: p.name for p in kb.people}
    for ex in kb.examples:
        assert len(ex.meta["decoys"]) == 2 and len(ex.meta["answer_distractors"]) == 2
        for pid in ex.meta["decoys"]:
            decoy = corpus[corpus.index_of(pid)]
            assert ex.query in decoy.text and names[ex.meta["entity"]] in decoy.text
            assert not contains_answer(decoy.full_text(), ex.answers)  # never the fact
            assert decoy.group == ex.meta["entity"]  # splits keep it with its person
        for pid in ex.meta["answer_distractors"]:
            d = corpus[corpus.index_of(pid)]
            assert contains_answer(d.text, ex.answers)  # the answer string, about someone else
            assert d.title != names[ex.meta["entity"]]
            assert d.title.split()[-1] == names[ex.meta["entity"]].split()[-1]  # a same-surname cousin
    two_hop = [ex for ex in kb.examples if ex.hops == 2]
    assert two_hop and all(ex.meta["decoys"] for ex in two_hop)  # bridge questions get them too


def test_the_base_knowledge_base_is_unchanged():
    plain = build_knowledge_base(30, seed=2, two_hop_fraction=0.3)
    hard = build_knowledge_base(30, seed=2, **HARD)
    n = len(plain.corpus)
    assert [p.text for p in hard.corpus][:n] == [p.text for p in plain.corpus]
    assert [e.query for e in hard.examples] == [e.query for e in plain.examples]
    again = build_knowledge_base(30, seed=2, **HARD)
    assert again.corpus.fingerprint() == hard.corpus.fingerprint()  # seeded


def test_oracle_candidates_are_the_gold_passages_then_decoys():
    data = SyntheticSource(num_entities=30, seed=0, oracle_candidates=2, **HARD).load()
    for ex in data.train + data.val:
        assert len(ex.candidate_ids) == 2
        if ex.hops == 1:
            assert ex.candidate_ids == [ex.gold_passage_ids[0], ex.meta["decoys"][0]]
        else:
            assert ex.candidate_ids == ex.gold_passage_ids
    with pytest.raises(ValueError, match="has only 1 gold passages and decoys"):
        SyntheticSource(num_entities=10, oracle_candidates=2).load()


def test_bad_counts_are_value_errors():
    with pytest.raises(ValueError, match="decoys_per_question"):
        build_knowledge_base(10, decoys_per_question=9)
    with pytest.raises(ValueError, match="answer_distractors_per_question"):
        build_knowledge_base(10, answer_distractors_per_question=-1)


def test_answer_match_is_whole_words_and_case_blind():
    assert contains_answer("Born in Tornvik in 1950.", ["tornvik"])
    assert not contains_answer("Born in Tornviken.", ["Tornvik"])
    assert not contains_answer("anything", [""])


def test_gap_reports_the_precision_of_answer_matching():
    sims, ll = [3.0, 2.0, 1.0], [0.0, -1.0, -2.0]
    # the most similar matching candidate (index 1) is not gold; gold is candidate 2
    m = question_metrics(sims, ll, 3, gold=[False, False, True], answer_match=[False, True, True])
    assert m["answer_match_found"] == 1.0 and m["answer_match_is_gold"] == 0.0
    m = question_metrics(sims, ll, 3, gold=[False, False, True], answer_match=[False, False, False])
    assert m["answer_match_found"] == 0.0 and "answer_match_is_gold" not in m
