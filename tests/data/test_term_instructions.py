"""Instruction pairs over a real corpus (``joint_rag.data.term_instructions``, ``jrag pairs``): the
term is in the gold passages it excludes and absent from the query, judgements change only for
``changed``, the JSONL round-trips through ``read_instruction_pairs``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from joint_rag.cli import main
from joint_rag.data.term_instructions import term_instruction_pairs, words, write_instruction_pairs
from joint_rag.data.types import Corpus, Example, Passage
from joint_rag.instructions import read_instruction_pairs

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FILLER = ["alpha beta gamma", "delta epsilon zeta", "kappa lambda sigma", "omega theta iota"] * 10


def _corpus() -> Corpus:
    texts = {
        "g1": "Oboe players in Porto tune their reeds carefully.",
        "g2": "Oboe players in Lisbon practise scales daily.",
        "g3": "Violinists in Madrid rehearse sonatas.",
        "d1": "Reeds are cut from cane in Porto workshops.",
        "d2": "Scales and sonatas appear in Lisbon concert programmes.",
    }
    passages = [Passage(pid, "", t) for pid, t in texts.items()]
    passages += [Passage(f"f{i}", "", t) for i, t in enumerate(FILLER)]
    return Corpus(passages)


EXAMPLES = [
    Example("Who plays the oboe?", [], ["g1", "g2"], example_id="multi"),
    Example("Who plays the violin?", [], ["g3"], example_id="single"),
]


def test_pairs_exclude_or_require_a_rare_term_of_the_gold_passages():
    corpus = _corpus()
    text = {p.passage_id: p.text for p in corpus}
    for kind in ("exclude", "require", "both"):
        pairs = term_instruction_pairs(corpus, EXAMPLES, kind=kind, max_df=0.1)
        assert pairs, kind
        for pair in pairs:
            term = pair.instruction_new.split("'")[1]
            assert term not in words(pair.query) and len(term) >= 4
            gold = [pid for pid, g in pair.relevant_og.items() if g > 0]
            has = {pid for pid in gold if term in words(text[pid])}
            assert set(pair.changed) == (has if pair.query_id.endswith(":exclude") else set(gold) - has)
            assert {pid for pid, g in pair.relevant_new.items() if g > 0} == set(gold) - set(pair.changed)
            assert pair.instruction_og == ""
    kinds = [p.query_id for p in term_instruction_pairs(corpus, EXAMPLES, kind="both", max_df=0.1)]
    assert kinds == ["multi:require", "single:exclude"]  # require needs two gold passages
    assert term_instruction_pairs(corpus, EXAMPLES, kind="exclude", max_df=0.1, n=1).__len__() == 1
    with pytest.raises(ValueError, match="kind must be one of"):
        term_instruction_pairs(corpus, EXAMPLES, kind="negate")


def test_written_pairs_read_back_the_same(tmp_path):
    pairs = term_instruction_pairs(_corpus(), EXAMPLES, max_df=0.1)
    path = write_instruction_pairs(tmp_path / "p.jsonl", pairs)
    assert read_instruction_pairs(path) == pairs


def test_jrag_pairs_on_a_beir_folder(tmp_path, capsys):
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    corpus = _corpus()
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": p.passage_id, "text": p.text}) + "\n" for p in corpus)
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": ex.example_id, "text": ex.query}) + "\n" for ex in EXAMPLES)
    )
    (root / "qrels" / "test.tsv").write_text("q\tp\ts\nmulti\tg1\t1\nmulti\tg2\t1\nsingle\tg3\t1\n")
    out = tmp_path / "pairs.jsonl"
    assert main(["pairs", "--beir", str(root), "--out", str(out), "--max-df", "0.1"]) == 0
    assert "2 pairs of 2 queries (exclude 1, require 1" in capsys.readouterr().out
    assert len(read_instruction_pairs(out)) == 2
    with pytest.raises(SystemExit):
        main(["pairs", "--beir", str(tmp_path / "none"), "--out", str(out)])
    assert "folder not found" in capsys.readouterr().err


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is absent")
def test_scifact_pairs():
    from joint_rag.data.formats import BeirSource

    source = BeirSource(DATA / "scifact")
    corpus = source.read_corpus()
    examples = source.read_qrels("test", corpus, source.read_queries())
    pairs = term_instruction_pairs(corpus, examples)
    assert len(pairs) == 300  # every test claim's abstract has a rare word the claim lacks
    assert sum(p.query_id.endswith(":require") for p in pairs) > 10
