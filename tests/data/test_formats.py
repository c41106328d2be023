"""Readers for SQuAD, BEIR and HotpotQA files: real data counts, layouts, and error messages."""

import json
from pathlib import Path

import pytest

from joint_rag.data.formats import BeirSource, HotpotQASource, SquadSource
from joint_rag.data.splits import group_overlap
from joint_rag.data.types import DataError

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is absent")


# ----------------------------------------------------------------------------- real files


@needs_data
def test_xquad_counts_and_article_split():
    src = SquadSource(DATA / "xquad-en" / "xquad.en.json", val_fraction=0.2, test_fraction=0.1)
    data = src.load()
    assert len(data.corpus) == 240
    assert len(data.train) + len(data.val) + len(data.test) == 1190
    assert len({p.group for p in data.corpus}) == 48
    assert not group_overlap(data.train, data.val, data.corpus)
    assert not group_overlap(data.train, data.test, data.corpus)
    ex = data.train[0]
    assert ex.answer and ex.answer in data.corpus[data.corpus.index_of(ex.gold_passage_ids[0])].text


@needs_data
def test_scifact_counts():
    data = BeirSource(DATA / "scifact", val_fraction=0.0).load()
    assert len(data.corpus) == 5183
    assert len(data.train) == 809 and len(data.val) == 0 and len(data.test) == 300
    assert sum(len(ex.gold_passage_ids) for ex in data.train) == 919
    assert sum(len(ex.gold_passage_ids) for ex in data.test) == 339
    assert all(ex.answers == [] for ex in data.train)
    split = BeirSource(DATA / "scifact", val_fraction=0.3).load()
    assert len(split.val) + len(split.test) == 300 and split.val
    assert not group_overlap(split.val, split.test, split.corpus)
    disjoint = BeirSource(DATA / "scifact", val_fraction=0.0, disjoint_train=True).load()
    assert len(disjoint.train) < 809 and not group_overlap(disjoint.train, disjoint.test, disjoint.corpus)


@needs_data
def test_msmarco_sample_splits_the_single_qrels_by_group():
    data = BeirSource(DATA / "msmarco-qa-sample", val_fraction=0.2, test_fraction=0.2).load()
    assert len(data.corpus) == 1743
    assert len(data.train) + len(data.val) + len(data.test) == 1743
    assert data.val and data.test and all(ex.answers for ex in data.train)
    assert not group_overlap(data.train, data.val, data.corpus)
    small = BeirSource(DATA / "msmarco-qa-sample", max_examples=50).load()
    assert len(small.train) == 50 and len(small.val) == 50


# ----------------------------------------------------------------------------- SQuAD fixtures


def _squad(path: Path, data) -> Path:
    path.write_text(json.dumps({"version": "1.1", "data": data}, indent=1))
    return path


def _article(title="A", question="Q?"):
    qa = {"id": "q1", "question": question, "answers": [{"text": "x", "answer_start": 0}] * 2}
    return {"title": title, "paragraphs": [{"context": "x y", "qas": [qa]}]}


def test_squad_small_file(tmp_path):
    path = _squad(tmp_path / "s.json", [_article("A"), _article("B")])
    corpus, examples = SquadSource(path).read()
    assert corpus.ids == ["A#0", "B#0"] and examples[0].answers == ["x"]


def test_squad_missing_field_names_file_record_and_field(tmp_path):
    art = _article()
    del art["paragraphs"][0]["qas"][0]["question"]
    path = _squad(tmp_path / "s.json", [art])
    with pytest.raises(
        DataError, match=r"s\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\]: missing field 'question'"
    ):
        SquadSource(path).load()


def test_squad_malformed_json_names_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n "data": [\n  {"title": "A",,}\n ]\n}\n')
    with pytest.raises(DataError, match=r"bad\.json:3: malformed JSON"):
        SquadSource(path).load()


def test_squad_missing_file_and_empty_corpus(tmp_path):
    with pytest.raises(DataError, match=r"nope\.json: file not found; expected a SQuAD"):
        SquadSource(tmp_path / "nope.json").load()
    with pytest.raises(DataError, match=r"e\.json: the corpus is empty"):
        SquadSource(_squad(tmp_path / "e.json", [])).load()
    with pytest.raises(DataError, match=r"d\.json: duplicate passage id 'A#0'"):
        SquadSource(_squad(tmp_path / "d.json", [_article("A"), _article("A")])).load()


# ----------------------------------------------------------------------------- BEIR fixtures


def _beir(root: Path, corpus=None, queries=None, qrels=None, split="test") -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    corpus = (
        corpus if corpus is not None else [{"_id": f"d{i}", "title": "", "text": f"t{i}"} for i in range(6)]
    )
    queries = queries if queries is not None else [{"_id": f"q{i}", "text": f"query {i}"} for i in range(6)]
    qrels = qrels if qrels is not None else ["qid\tpid\tscore"] + [f"q{i}\td{i}\t1" for i in range(6)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / f"{split}.tsv").write_text("\n".join(qrels) + "\n")
    return root


def test_beir_reads_columns_by_position_and_keeps_positive_scores(tmp_path):
    qrels = ["corpus-id\tquery-id\tscore", "q0\td0\t1", "q0\td1\t0", "q1\td1\t2", "q2\td2\t0"]
    root = _beir(tmp_path, qrels=qrels)
    data = BeirSource(root, val_fraction=0.0).load()
    assert [(ex.example_id, ex.gold_passage_ids) for ex in data.train] == [("q0", ["d0"]), ("q1", ["d1"])]


def test_beir_answers_from_metadata(tmp_path):
    queries = [
        {"_id": f"q{i}", "text": "?", "metadata": {"answers": ["yes"], "query_type": "X"}} for i in range(6)
    ]
    data = BeirSource(_beir(tmp_path, queries=queries), val_fraction=0.0).load()
    assert data.train[0].answers == ["yes"] and data.train[0].meta["query_type"] == "X"


@pytest.mark.parametrize(
    ("qrels", "pattern"),
    [
        (["h\th\th", "q0\tmissing\t1"], r"test\.tsv:2: passage id 'missing' is not in corpus\.jsonl"),
        (["h\th\th", "q0\td0\t1", "zz\td0\t1"], r"test\.tsv:3: query id 'zz' is not in queries\.jsonl"),
        (["h\th\th", "q0\td0"], r"test\.tsv:2: expected 3 tab-separated columns"),
        (["h\th\th", "q0\td0\thigh"], r"test\.tsv:2: score 'high' is not a number"),
    ],
)
def test_beir_qrels_errors_name_file_and_line(tmp_path, qrels, pattern):
    with pytest.raises(DataError, match=pattern):
        BeirSource(_beir(tmp_path, qrels=qrels)).load()


def test_beir_jsonl_errors_name_file_line_and_field(tmp_path):
    root = _beir(tmp_path)
    with (root / "corpus.jsonl").open("a") as f:
        f.write('{"_id": "d9", "title": "x"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:7: missing field 'text'"):
        BeirSource(root).load()
    (root / "corpus.jsonl").write_text('{"_id": "d0", "text": "a"}\n{"_id": "d0", "text": "b"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: duplicate passage id 'd0' \(first on line 1\)"):
        BeirSource(root).load()
    _beir(root)
    (root / "queries.jsonl").write_text('{"_id": "q0", "text": "a"}\n{"_id": "q1", "text": \n')
    with pytest.raises(DataError, match=r"queries\.jsonl:2: malformed JSON line"):
        BeirSource(root).load()


def test_beir_missing_files(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        BeirSource(tmp_path / "absent").load()
    root = _beir(tmp_path)
    with pytest.raises(DataError, match=r"qrels/dev\.tsv: file not found; expected a BEIR qrels"):
        BeirSource(root, eval_split="dev").load()
    (root / "corpus.jsonl").unlink()
    with pytest.raises(DataError, match=r"corpus\.jsonl: file not found"):
        BeirSource(root).load()


# ----------------------------------------------------------------------------- HotpotQA fixtures

_CTX = [
    ["Alpha", ["Alpha is a town.", " It has a mill."]],
    ["Beta", ["Beta is a river."]],
    ["Gamma", ["Gamma."]],
]


def _original(i: int, ctx=_CTX) -> dict:
    return {
        "_id": f"h{i}",
        "question": f"Which river flows by Alpha {i}?",
        "answer": "Beta",
        "supporting_facts": [["Alpha", 0], ["Beta", 0]],
        "context": ctx,
        "type": "bridge",
    }


def _columnar(i: int) -> dict:
    return {
        "id": f"h{i}",
        "question": f"Which river flows by Alpha {i}?",
        "answer": "Beta",
        "supporting_facts": {"title": ["Alpha", "Beta"], "sent_id": [0, 0]},
        "context": {"title": [t for t, _ in _CTX], "sentences": [s for _, s in _CTX]},
    }


@pytest.mark.parametrize("layout", ["original", "hf-list", "hf-jsonl", "hf-jsonl-as-json", "hf-columns"])
def test_hotpotqa_layouts_agree(tmp_path, layout):
    if layout == "original":
        path = tmp_path / "h.json"
        path.write_text(json.dumps([_original(i) for i in range(3)]))
    elif layout == "hf-list":
        path = tmp_path / "h.json"
        path.write_text(json.dumps([_columnar(i) for i in range(3)]))
    elif layout == "hf-columns":  # one dict of columns, as `Dataset.to_dict()` gives
        path = tmp_path / "h.json"
        records = [_columnar(i) for i in range(3)]
        path.write_text(json.dumps({k: [r[k] for r in records] for k in records[0]}))
    else:
        path = tmp_path / ("h.jsonl" if layout == "hf-jsonl" else "h.json")
        path.write_text("".join(json.dumps(_columnar(i)) + "\n" for i in range(3)))
    corpus, examples = HotpotQASource(path).read()
    assert corpus.ids == ["Alpha", "Beta", "Gamma"]  # deduplicated across examples
    assert corpus[0].text == "Alpha is a town. It has a mill."
    assert [ex.example_id for ex in examples] == ["h0", "h1", "h2"]
    assert examples[0].gold_passage_ids == ["Alpha", "Beta"] and examples[0].candidate_ids == corpus.ids
    assert examples[0].answers == ["Beta"] and examples[0].hops == 2


def test_hotpotqa_same_title_different_text_gets_new_id(tmp_path):
    other = [["Alpha", ["Another Alpha."]], ["Beta", ["Beta is a river."]]]
    path = tmp_path / "h.json"
    path.write_text(json.dumps([_original(0), _original(1, other)]))
    corpus, examples = HotpotQASource(path).read()
    assert corpus.ids == ["Alpha", "Beta", "Gamma", "Alpha (2)"]
    assert examples[1].gold_passage_ids == ["Alpha (2)", "Beta"]


def test_hotpotqa_errors(tmp_path):
    path = tmp_path / "h.json"
    bad = _original(1)
    bad["supporting_facts"] = [["Delta", 0]]
    path.write_text(json.dumps([_original(0), bad]))
    with pytest.raises(DataError, match=r"h\.json: record 1: field 'supporting_facts' names title 'Delta'"):
        HotpotQASource(path).load()
    rec = _columnar(0)
    del rec["question"]
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(_columnar(1)) + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(DataError, match=r"h\.jsonl:2: missing field 'question'"):
        HotpotQASource(path).load()
    path.write_text(json.dumps(_columnar(1)) + "\n{oops\n")
    with pytest.raises(DataError, match=r"h\.jsonl:2: malformed JSON line"):
        HotpotQASource(path).load()


def test_beir_and_squad_read_an_instruction_field(tmp_path):
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(6)]
    queries[1]["instruction"] = "Only passages about oboes are relevant."
    data = BeirSource(_beir(tmp_path, queries=queries), val_fraction=0.0).load()
    by_id = {ex.example_id: ex for ex in data.train}
    assert by_id["q1"].instruction == "Only passages about oboes are relevant."
    assert by_id["q0"].instruction is None and "instruction" not in by_id["q1"].meta
    article = _article("A")
    article["paragraphs"][0]["qas"].append({**article["paragraphs"][0]["qas"][0], "id": "q2"})
    article["paragraphs"][0]["qas"][0]["instruction"] = "Answer in French."
    _, examples = SquadSource(_squad(tmp_path / "s.json", [article])).read()
    assert [ex.instruction for ex in examples] == ["Answer in French.", None]


def test_beir_max_train_keeps_n_training_queries_after_disjoint_train(tmp_path):
    qrels_train = ["qid\tpid\tscore"] + [f"t{i}\td{i}\t1" for i in range(6)]
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(2)]
    queries += [{"_id": f"t{i}", "text": f"train {i}"} for i in range(6)]
    root = _beir(tmp_path, queries=queries, qrels=["qid\tpid\tscore", "q0\td0\t1", "q1\td1\t1"])
    _beir(root, queries=queries, qrels=qrels_train, split="train")
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"t{i}"}) + "\n" for i in range(6))
    )
    full = BeirSource(root, val_fraction=0.0, disjoint_train=True).load()
    assert sorted(ex.example_id for ex in full.train) == ["t2", "t3", "t4", "t5"]  # t0, t1 share test gold
    three = BeirSource(root, val_fraction=0.0, disjoint_train=True, max_train=3).load()
    assert len(three.train) == 3 and {ex.example_id for ex in three.train} <= {"t2", "t3", "t4", "t5"}
    assert three.test == full.test and three.val == full.val  # evaluation untouched
    again = BeirSource(root, val_fraction=0.0, disjoint_train=True, max_train=3).load()
    assert [ex.example_id for ex in again.train] == [ex.example_id for ex in three.train]  # seeded
    with pytest.raises(
        DataError, match="max_train = 5 but the folder gives 4 training queries after disjoint_train"
    ):
        BeirSource(root, val_fraction=0.0, disjoint_train=True, max_train=5).load()
    with pytest.raises(ValueError, match="max_train must be a positive count"):
        BeirSource(root, max_train=0)
