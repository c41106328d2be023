"""``jrag synthesize`` (``joint_rag.synthesize``) and ``SynthesizedSource``: records from a domain
description, cleaned, deduplicated, seeded; training on them with a BEIR folder's real queries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from joint_rag.cli import main
from joint_rag.data.synthesized import SynthesizedSource
from joint_rag.data.types import Corpus, DataError, Passage
from joint_rag.synthesize import PromptLM, clean, synthesize, write_synthesized

CORPUS = Corpus([Passage(f"d{i}", "", f"Passage {i} about oboe reeds and cane {i}.") for i in range(6)])


class FakeLM:
    """Answers by prompt kind; records what it was asked."""

    def __init__(self, queries):
        self.queries, self.calls = list(queries), []

    def __call__(self, prompts, max_new_tokens, temperature=0.0, seeds=()):
        self.calls.append((len(prompts), temperature, list(seeds)))
        if prompts[0].startswith("Write a short factual passage"):
            return [f"  Generated passage\n about reeds {s}." for s in seeds]
        if "search query" in prompts[0]:
            return [self.queries.pop(0) for _ in prompts]
        return ["Instruction: A relevant document names the cane.\nextra" for _ in prompts]


def test_clean_takes_the_first_line_without_labels_or_quotes():
    assert clean('\n  Query: "how are oboe reeds cut?"\nsecond line') == "how are oboe reeds cut?"
    assert clean("Search query - reed cane") == "reed cane"
    assert clean("   \n  ") == ""


def test_records_from_a_corpus_drop_empty_and_repeated_queries():
    lm = FakeLM(["Query: how are reeds cut?", "", "how are reeds cut?", "what is cane?"])
    out = synthesize("Oboe making.", 4, lm, CORPUS, batch_size=4, show_progress=False)
    assert (out.dropped_empty, out.dropped_repeated) == (1, 1)
    assert [r["query"] for r in out.records] == ["how are reeds cut?", "what is cane?"]
    assert all(r["instruction"] == "A relevant document names the cane." for r in out.records)
    assert all(len(r["positive_ids"]) == 1 and r["positive_ids"][0] in CORPUS for r in out.records)
    assert all("passage" not in r for r in out.records)
    with pytest.raises(ValueError, match="the corpus has 6 passages"):
        synthesize("Oboe making.", 7, lm, CORPUS)
    with pytest.raises(ValueError, match="description is empty"):
        synthesize("  ", 2, lm, CORPUS)


def test_generated_passages_are_sampled_with_one_seed_per_item():
    lm = FakeLM(["q one", "q two", "q three"])
    out = synthesize(
        "Oboe making.", 3, lm, None, instructions=False, seed=2, batch_size=2, show_progress=False
    )
    assert [r["passage"]["_id"] for r in out.records] == ["syn-p0", "syn-p1", "syn-p2"]
    assert out.records[0]["passage"]["text"] == "Generated passage about reeds 2000006."
    assert out.records[0]["instruction"] is None
    sampled = [c for c in lm.calls if c[1] > 0]
    assert [c[2] for c in sampled] == [[2000006, 2000007], [2000008]]


def test_a_real_tiny_lm_is_deterministic(tmp_path):
    lm = PromptLM("tiny-llama")
    a = synthesize("Oboe making.", 3, lm, CORPUS, max_new_tokens=6, show_progress=False)
    b = synthesize("Oboe making.", 3, lm, CORPUS, max_new_tokens=6, show_progress=False)
    assert a.records == b.records and len(a.records) + a.dropped_empty + a.dropped_repeated == 3


def _beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": p.passage_id, "text": p.text}) + "\n" for p in CORPUS)
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": f"real {i}"}) + "\n" for i in range(3))
    )
    (root / "qrels" / "test.tsv").write_text("q\tp\ts\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(3)))
    return root


def test_synthesized_source_trains_on_records_and_evaluates_on_real_queries(tmp_path):
    out = synthesize("Oboe making.", 4, FakeLM([f"query {i}" for i in range(4)]), CORPUS, show_progress=False)
    path = write_synthesized(tmp_path / "syn.jsonl", out.records)
    data = SynthesizedSource(path, beir=_beir(tmp_path / "beir"), max_train=3).load()
    assert [ex.query for ex in data.train] == ["query 0", "query 1", "query 2"]
    assert data.train[0].instruction == "A relevant document names the cane."
    assert [ex.query for ex in data.val] == ["real 0", "real 1", "real 2"] and data.test == data.val
    with pytest.raises(DataError, match="max_train = 9 but the file has 4 training records"):
        SynthesizedSource(path, beir=tmp_path / "beir", max_train=9).load()
    # d0..d2 are gold for the real evaluation queries: disjoint_train drops the records on them
    drawn = [ex.gold_passage_ids[0] for ex in SynthesizedSource(path, beir=tmp_path / "beir").load().train]
    kept = SynthesizedSource(path, beir=tmp_path / "beir", disjoint_train=True).load().train
    assert [ex.gold_passage_ids[0] for ex in kept] == [p for p in drawn if p not in {"d0", "d1", "d2"}]
    assert len(kept) < len(drawn)
    with pytest.raises(DataError, match="after disjoint_train"):
        SynthesizedSource(path, beir=tmp_path / "beir", disjoint_train=True, max_train=4).load()
    generated = synthesize("Oboe.", 5, FakeLM([f"q{i}" for i in range(5)]), None, show_progress=False)
    own = SynthesizedSource(
        write_synthesized(tmp_path / "gen.jsonl", generated.records), val_fraction=0.2
    ).load()
    assert len(own.corpus) == 5 and (len(own.train), len(own.val), len(own.test)) == (3, 1, 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**out.records[0], "positive_ids": ["nope"]}) + "\n")
    with pytest.raises(DataError, match="names passage id 'nope', which is not in the corpus"):
        SynthesizedSource(bad, beir=tmp_path / "beir").load()
    bad.write_text(json.dumps(out.records[0]) + "\n" + json.dumps(out.records[0]) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: duplicate query_id"):
        SynthesizedSource(bad, beir=tmp_path / "beir").load()


def test_jrag_synthesize_command(tmp_path, capsys, monkeypatch):
    import joint_rag.synthesize as synth

    beir = _beir(tmp_path / "beir")
    out = tmp_path / "syn.jsonl"
    args = [
        "synthesize",
        "--description",
        "Oboe making.",
        "--corpus",
        str(beir),
        "--n",
        "3",
        "--out",
        str(out),
    ]
    monkeypatch.setattr(synth, "PromptLM", lambda backbone, device: FakeLM(["", "", ""]))
    with pytest.raises(SystemExit):  # nothing usable: one error line, no file
        main(args)
    assert "all 3 generations were empty or repeated" in capsys.readouterr().err and not out.exists()
    monkeypatch.setattr(synth, "PromptLM", lambda backbone, device: FakeLM(["a?", "b?", "c?"]))
    assert main(args) == 0
    assert "3 records -> " in capsys.readouterr().out
    assert [json.loads(line)["query"] for line in out.read_text().splitlines()] == ["a?", "b?", "c?"]
    with pytest.raises(SystemExit):
        main(["synthesize", "--description", "x", "--corpus", str(tmp_path / "none"), "--out", str(out)])
    assert "none: no such file or folder" in capsys.readouterr().err
