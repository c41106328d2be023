"""Bad data input: each fault gives one DataError (one line, naming file, line or record, field,
and what to do), or is read as stated (TREC qrels, graded qrels, explicit splits).

Issue 14, items 5 and 6 (the data side). The readers write no files, so no partial output can
be left behind by any of these faults.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from joint_rag.data.collate import collate_examples
from joint_rag.data.formats import BeirSource, HotpotQASource, SquadSource
from joint_rag.data.splits import split_by_ids, split_by_order
from joint_rag.data.types import Example
from joint_rag.errors import DataError
from joint_rag.training.datamodule import RAGDataModule
from joint_rag.training.metrics import RetrievalMetrics


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and type(excinfo.value) is DataError
    return message


def _beir(root: Path, corpus=None, queries=None, qrels=None, split="test") -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    corpus = corpus if corpus is not None else [{"_id": f"d{i}", "text": f"t{i}"} for i in range(6)]
    queries = queries if queries is not None else [{"_id": f"q{i}", "text": f"query {i}"} for i in range(6)]
    qrels = (
        qrels if qrels is not None else ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(6)]
    )
    (root / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / f"{split}.tsv").write_text("\n".join(qrels) + "\n")
    return root


def _hotpot(i: int, titles=("Alpha", "Beta", "Gamma")) -> dict:
    return {
        "_id": f"h{i}",
        "question": f"Which river flows by Alpha {i}?",
        "answer": "Beta",
        "supporting_facts": [["Alpha", 0], ["Beta", 0]],
        "context": [[t, [f"{t} is a place."]] for t in titles],
    }


# ----------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("name", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_non_utf8_byte_names_file_line_and_column(tmp_path, name):
    root = _beir(tmp_path)
    path = root / name
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2][:5] + b"\xff" + lines[2][5:]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError) as excinfo:
        BeirSource(root).load()
    message = _one_line(excinfo)
    assert f"{name}:3: not UTF-8 text (byte 0xff at column 6); re-save the file as UTF-8" in message


def test_non_utf8_byte_in_json_names_line(tmp_path):
    path = tmp_path / "s.json"
    path.write_bytes(b'{"data": [\n {"title": "A",\n  "x": "caf\xe9"}\n]}\n')
    with pytest.raises(DataError) as excinfo:
        SquadSource(path).load()
    assert "s.json:3: not UTF-8 text (byte 0xe9 at column 12)" in _one_line(excinfo)
    path = tmp_path / "h.json"
    path.write_bytes(b"[\n\xc3(\n]")
    with pytest.raises(DataError, match=r"h\.json:2: not UTF-8 text \(byte 0xc3 at column 1\)"):
        HotpotQASource(path).load()


def test_utf8_byte_order_mark_is_read(tmp_path):
    root = _beir(tmp_path)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        (root / name).write_bytes(b"\xef\xbb\xbf" + (root / name).read_bytes())
    assert len(BeirSource(root).load().corpus) == 6


# ----------------------------------------------------------------------------- malformed input


def test_json_error_reads_at_column_once(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"data": [\n {"title": "unterminated')
    with pytest.raises(DataError) as excinfo:
        SquadSource(path).load()
    message = _one_line(excinfo)
    assert "s.json:2: malformed JSON (Unterminated string starting at column 12)" in message
    assert "at at" not in message
    root = _beir(tmp_path / "b")
    (root / "corpus.jsonl").write_text('{"_id": "d0", "text": "a\x01"}\n')
    with pytest.raises(DataError) as excinfo:
        BeirSource(root).load()
    message = _one_line(excinfo)
    assert "corpus.jsonl:1: malformed JSON line (Invalid control character at column 25)" in message
    assert "at at" not in message


def test_malformed_jsonl_line(tmp_path):
    root = _beir(tmp_path)
    (root / "queries.jsonl").write_text('{"_id": "q0", "text": "a"}\n{"_id": "q1",\n')
    with pytest.raises(DataError, match=r"queries\.jsonl:2: malformed JSON line \(Expecting"):
        BeirSource(root).load()
    (root / "queries.jsonl").write_text('{"_id": "q0", "text": "a"}\n["q1"]\n')
    with pytest.raises(DataError, match=r"queries\.jsonl:2: expected a JSON object, got list"):
        BeirSource(root).load()


def test_malformed_tsv_line(tmp_path):
    root = _beir(tmp_path, qrels=["query-id\tcorpus-id\tscore", "q0\td0\t1", "q1 d1"])
    with pytest.raises(DataError) as excinfo:
        BeirSource(root).load()
    message = _one_line(excinfo)
    assert "test.tsv:3: expected 3 tab-separated columns (query id, passage id, score), got 1" in message
    assert "TREC" in message  # the formats it reads


@pytest.mark.parametrize(
    ("record", "pattern"),
    [
        ({"text": "no id"}, r"corpus\.jsonl:7: missing field '_id' \(or 'id'\)"),
        ({"_id": "d9"}, r"corpus\.jsonl:7: missing field 'text'"),
        ({"_id": "d9", "text": ["a"]}, r"corpus\.jsonl:7: field 'text' should be str, got list"),
    ],
)
def test_missing_or_mistyped_field_names_line_and_every_accepted_name(tmp_path, record, pattern):
    root = _beir(tmp_path)
    with (root / "corpus.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    with pytest.raises(DataError, match=pattern):
        BeirSource(root).load()


def test_record_id_may_be_id_or__id(tmp_path):
    root = _beir(tmp_path, corpus=[{"id": f"d{i}", "text": f"t{i}"} for i in range(6)])
    assert BeirSource(root).load().corpus.ids[:2] == ["d0", "d1"]
    rec = _hotpot(1)
    del rec["_id"]
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(_hotpot(0)) + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(DataError, match=r"h\.jsonl:2: missing field '_id' \(or 'id'\)$"):
        HotpotQASource(path).load()


def test_empty_corpus(tmp_path):
    root = _beir(tmp_path, corpus=[])
    with pytest.raises(DataError, match=r"corpus\.jsonl: the corpus is empty \(no passages\)"):
        BeirSource(root).load()


@pytest.mark.parametrize(
    ("corpus", "queries", "pattern"),
    [
        (
            [{"_id": "d0", "text": "a"}, {"_id": "d0", "text": "b"}],
            None,
            r"corpus\.jsonl:2: duplicate passage id 'd0' \(first on line 1\); give every passage its own id",
        ),
        (
            None,
            [{"_id": "q0", "text": "a"}, {"_id": "q1", "text": "b"}, {"_id": "q0", "text": "c"}],
            r"queries\.jsonl:3: duplicate query id 'q0' \(first on line 1\); give every query its own id",
        ),
    ],
)
def test_duplicate_ids(tmp_path, corpus, queries, pattern):
    with pytest.raises(DataError, match=pattern):
        BeirSource(_beir(tmp_path, corpus=corpus, queries=queries)).load()


@pytest.mark.parametrize(
    ("qrels", "pattern"),
    [
        (["h\th\th", "q0\td0\t1", "q1\tnope\t1"], r"test\.tsv:3: passage id 'nope' is not in corpus\.jsonl"),
        (["h\th\th", "zz\td0\t1"], r"test\.tsv:2: query id 'zz' is not in queries\.jsonl"),
        (["h\th\th", "q0\td0\t0"], r"test\.tsv: no query has a judgement with score > 0"),
        (
            ["h\th\th", "q0\td0\t1", "q0\td0\t2"],
            r"test\.tsv:3: query 'q0' and passage 'd0' are judged 2 here but 1 on line 2; keep one",
        ),
    ],
)
def test_qrels_naming_unknown_ids_or_nothing_relevant(tmp_path, qrels, pattern):
    with pytest.raises(DataError, match=pattern):
        BeirSource(_beir(tmp_path, qrels=qrels)).load()


# ----------------------------------------------------------------------------- TREC qrels


@pytest.mark.parametrize("sep", [" ", "\t"])
def test_trec_qrels_are_read(tmp_path, sep):
    lines = [
        sep.join(["q0", "Q0", "d0", "2"]),
        sep.join(["q0", "0", "d1", "0"]),
        sep.join(["q1", "Q0", "d1", "1"]),
    ]
    data = BeirSource(_beir(tmp_path, qrels=lines), val_fraction=0.0).load()
    got = {ex.example_id: (ex.gold_passage_ids, ex.grades) for ex in data.train}
    assert got == {"q0": (["d0"], {"d0": 2.0, "d1": 0.0}), "q1": (["d1"], {"d1": 1.0})}


def test_trec_qrels_with_a_line_of_another_format_is_refused_naming_the_format(tmp_path):
    root = _beir(tmp_path, qrels=["q0 Q0 d0 1", "q1\td1\t1"])
    with pytest.raises(DataError) as excinfo:
        BeirSource(root).load()
    message = _one_line(excinfo)
    assert "test.tsv:2: expected 4 whitespace-separated columns" in message
    assert "line 1 made this a TREC" in message and "do not mix formats" in message


def test_trec_qrels_bad_relevance_names_format(tmp_path):
    root = _beir(tmp_path, qrels=["q0 Q0 d0 1", "q1 Q0 d1 high"])
    with pytest.raises(DataError, match=r"test\.tsv:2: score 'high' is not a number \(read as TREC"):
        BeirSource(root).load()


# ----------------------------------------------------------------------------- graded qrels


def test_graded_qrels_keep_grades_and_ndcg_uses_them(tmp_path):
    qrels = ["query-id\tcorpus-id\tscore", "q0\td0\t1", "q0\td1\t2", "q0\td2\t0", "q1\td3\t1"]
    data = BeirSource(_beir(tmp_path, qrels=qrels), val_fraction=0.0).load()
    ex = {e.example_id: e for e in data.train}["q0"]
    assert ex.gold_passage_ids == ["d0", "d1"]  # grade > 0 (>= 1): gold
    assert ex.grades == {"d0": 1.0, "d1": 2.0, "d2": 0.0}  # the explicit 0 is kept
    batch = collate_examples([ex])
    assert batch.gold_grades == [{"d0": 1.0, "d1": 2.0, "d2": 0.0}]
    ranked = [["d0", "d2", "d1"]]
    graded, binary = (
        RetrievalMetrics(recall_ks=(1, 3), ndcg_k=3),
        RetrievalMetrics(recall_ks=(1, 3), ndcg_k=3),
    )
    graded.update(ranked, batch.gold_grades)
    binary.update(ranked, batch.gold_ids)
    g, b = (
        {k: v.item() for k, v in graded.compute().items()},
        {k: v.item() for k, v in binary.compute().items()},
    )
    # DCG = 1/log2(2) + 2/log2(4) = 2; IDCG = 2 + 1/log2(3)
    assert g["ndcg@3"] == pytest.approx(2 / (2 + 1 / 1.5849625007211563))
    assert b["ndcg@3"] == pytest.approx((1 + 0.5) / (1 + 1 / 1.5849625007211563))
    assert g["recall@1"] == b["recall@1"] == 0.5 and g["recall@3"] == b["recall@3"] == 1.0


def test_binary_examples_score_as_before():
    examples = [Example("q", [], ["a", "b"], example_id="x"), Example("r", [], ["c"], example_id="y")]
    batch = collate_examples(examples)
    assert batch.gold_grades == [{"a": 1.0, "b": 1.0}, {"c": 1.0}]
    ranked = [["b", "z", "a"], ["z", "c"]]
    by_grades, by_ids = RetrievalMetrics(ndcg_k=3), RetrievalMetrics(ndcg_k=3)
    by_grades.update(ranked, batch.gold_grades)
    by_ids.update(ranked, batch.gold_ids)
    assert {k: v.item() for k, v in by_grades.compute().items()} == {
        k: v.item() for k, v in by_ids.compute().items()
    }


# ----------------------------------------------------------------------------- explicit splits


def test_beir_split_by_listed_ids_and_id_files(tmp_path):
    root = _beir(tmp_path)
    data = BeirSource(root, val_ids=["q1", "q4"], test_ids=["q5"]).load()
    assert [e.example_id for e in data.train] == ["q0", "q2", "q3"]
    assert [e.example_id for e in data.val] == ["q1", "q4"] and [e.example_id for e in data.test] == ["q5"]
    (tmp_path / "train.txt").write_text("# train\nq0\nq1\n\n")
    (tmp_path / "eval.txt").write_text("q2\nq3\nq4\nq5\n")
    data = BeirSource(root, train_ids=str(tmp_path / "train.txt"), test_ids=str(tmp_path / "eval.txt")).load()
    assert [e.example_id for e in data.train] == ["q0", "q1"] and len(data.test) == 4 and not data.val


def test_listed_id_errors_name_list_entry(tmp_path):
    root = _beir(tmp_path)
    (tmp_path / "val.txt").write_text("q1\nq9\n")
    with pytest.raises(DataError) as excinfo:
        BeirSource(root, val_ids=str(tmp_path / "val.txt")).load()
    assert "val.txt:2: example id 'q9' (val_ids) is not in" in _one_line(excinfo)
    with pytest.raises(
        DataError, match=r"test_ids\[0\]: example id 'q1' is listed for test and for val \(val_ids\[0\]\)"
    ):
        BeirSource(root, val_ids=["q1"], test_ids=["q1"]).load()
    with pytest.raises(DataError, match=r"example 'q2' is in none of train_ids, val_ids, test_ids"):
        BeirSource(root, train_ids=["q0", "q1"], val_ids=["q3", "q4", "q5"]).load()
    with pytest.raises(
        DataError, match=r"nope\.txt: file not found; expected a file of example ids for test_ids"
    ):
        BeirSource(root, test_ids=str(tmp_path / "nope.txt")).load()


def test_split_option_conflicts_are_refused():
    with pytest.raises(ValueError, match=r"BeirSource\.split_by must be one of group, order, ids"):
        BeirSource("x", split_by="random")
    with pytest.raises(ValueError, match="split_by is 'ids' but none of train_ids, val_ids, test_ids is set"):
        BeirSource("x", split_by="ids")
    with pytest.raises(ValueError, match="split_by 'order' and val_ids exclude each other"):
        SquadSource("x", split_by="order", val_ids=["a"])
    with pytest.raises(ValueError, match="evaluate_all and test_ids exclude each other"):
        HotpotQASource("x", evaluate_all=True, test_ids=["a"])


def test_beir_evaluate_all_for_a_folder_with_test_qrels_only(tmp_path):
    root = _beir(tmp_path)
    data = BeirSource(root, evaluate_all=True).load()
    assert data.train == [] and len(data.val) == len(data.test) == 6
    module = RAGDataModule(BeirSource(root, evaluate_all=True), require_answers=False)
    with pytest.raises(ValueError, match=r"BeirSource: the 'train' split is empty \(e\.g\. evaluate_all"):
        module.train_dataloader()
    assert len(module.val_dataloader().dataset) == 6
    # with train qrels, train still comes from them
    (root / "qrels" / "train.tsv").write_text("q-id\tc-id\tscore\nq0\td0\t1\n")
    data = BeirSource(root, evaluate_all=True).load()
    assert [e.example_id for e in data.train] == ["q0"] and len(data.test) == 6


def test_split_in_file_order(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(_hotpot(i)) + "\n" for i in range(10)))
    data = HotpotQASource(path, split_by="order", val_fraction=0.2, test_fraction=0.1).load()
    assert [e.example_id for e in data.train] == [f"h{i}" for i in range(7)]
    assert [e.example_id for e in data.val] == ["h7", "h8"] and [e.example_id for e in data.test] == ["h9"]
    train, val, test = split_by_order(data.train, 0.0)
    assert len(train) == 7 and not val and not test


def test_split_by_ids_needs_unique_example_ids():
    examples = [Example("a", [], [], example_id="x"), Example("b", [], [], example_id="x")]
    with pytest.raises(DataError, match=r"s\.json: example id 'x' belongs to examples 0 and 1"):
        split_by_ids(examples, None, [("x", "val_ids[0]")], None, source="s.json")


# ----------------------------------------------------------------------------- candidates


def _short_candidates_module(tmp_path: Path, stage_c: int) -> RAGDataModule:
    path = tmp_path / "h.jsonl"
    records = [_hotpot(i) for i in range(4)] + [_hotpot(4, titles=("Alpha", "Beta"))]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    dm = RAGDataModule(HotpotQASource(path, split_by="order", val_fraction=0.0))
    module = SimpleNamespace(candidate_source="example", system=SimpleNamespace(num_candidates=stage_c))
    dm.trainer = SimpleNamespace(lightning_module=module)
    return dm


def test_fewer_candidates_than_num_candidates_is_reported_at_setup(tmp_path):
    dm = _short_candidates_module(tmp_path, 3)
    with pytest.raises(DataError) as excinfo:
        dm.setup("fit")
    message = _one_line(excinfo)
    assert "h.jsonl:5: example 'h4' has 2 candidate passages but model.num_candidates is 3" in message
    assert "(1 train examples have fewer, the fewest 2); set model.num_candidates: 2" in message
    _short_candidates_module(tmp_path, 2).setup("fit")  # enough candidates: no error


def test_candidate_lists_are_not_checked_for_index_candidates(tmp_path):
    dm = _short_candidates_module(tmp_path, 3)
    dm.trainer.lightning_module.candidate_source = "index"
    dm.setup("fit")


# ----------------------------------------------------------------------------- truncation


def test_truncated_passages_warn_once_per_corpus_with_the_count():
    from joint_rag.models.compressor import Compressor

    compressor = Compressor("tiny-bert", num_memory_tokens=2, max_length=8)
    texts = ["hi", "short", "abcdefghijk", "one two three"]  # 2, 5, 11 and 13 tokens
    with pytest.warns(UserWarning) as record:
        assert compressor.warn_truncated(texts, "corpus.jsonl") == 2
    assert len(record) == 1
    assert str(record[0].message).startswith(
        "corpus.jsonl: 2 of 4 passages are longer than compressor max_length=8 tokens and are truncated"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compressor.warn_truncated(texts, "corpus.jsonl") == 2  # the same corpus: no second warning
        assert compressor.warn_truncated(texts[:1], "other.jsonl") == 0  # nothing cut: no warning
