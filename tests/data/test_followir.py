"""The FollowIR / MTEB instruction folder reader (``joint_rag.data.followir``) on fixtures the
tests write: judgements on both sides, the changed set as MTEB's qrel diff, top_ranked, errors."""

from __future__ import annotations

import pytest
from followir_fixture import write_followir  # (tests/ is on sys.path under pytest)

from joint_rag.data.followir import read_followir
from joint_rag.data.types import DataError


def test_pairs_carry_both_judgements_and_the_qrel_diff(tmp_path):
    corpus, pairs = read_followir(write_followir(tmp_path))
    assert len(corpus) == 6 and corpus.ids[0] == "doc 0"
    assert [p.query_id for p in pairs] == ["q1", "q2"]  # q3: nothing relevant under the original
    q1, q2 = pairs
    assert q1.changed == ("doc 0", "doc 2")  # relevant under og, not under changed
    assert q1.relevant_og == {"doc 0": 2.0, "doc 1": 1.0, "doc 2": 1.0}
    assert q1.relevant_new == {"doc 1": 1.0, "doc 0": 0.0}
    assert q1.instruction_new == "Only in Porto." and q1.candidates is None
    assert q2.changed == () and q2.relevant_new == {"doc 3": 1.0}


def test_top_ranked_lists_and_single_ids(tmp_path):
    top = [
        {"qid": "q1", "pid": ["doc 0", "doc 1", "doc 2", "doc 5"]},
        {"qid": "q2", "pid": "doc 3"},
        {"qid": "q2", "pid": "doc 4"},
        {"qid": "q3", "pid": ["doc 4"]},
    ]
    _, pairs = read_followir(write_followir(tmp_path, top))
    assert pairs[0].candidates == ("doc 0", "doc 1", "doc 2", "doc 5")
    assert pairs[1].candidates == ("doc 3", "doc 4")


@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        (lambda r: (r / "qrels_changed" / "test.tsv").unlink(), r"qrels_changed/test\.tsv: file not found"),
        (
            lambda r: (r / "qrels_og" / "test.tsv").write_text("h\th\th\nq1\tdoc 9\t1\n"),
            r"qrels_og/test\.tsv:2: passage id 'doc 9' is not in corpus\.jsonl",
        ),
        (
            lambda r: (r / "queries.jsonl").write_text('{"_id": "q1", "text": "t", "instruction_og": "a"}\n'),
            r"queries\.jsonl:1: missing field 'instruction_changed' \(or 'instruction_new'\)",
        ),
        (
            lambda r: (r / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "\xff"}\n'),
            r"queries\.jsonl:1: not UTF-8",
        ),
        (
            lambda r: (r / "top_ranked.jsonl").write_text('{"qid": "q1", "pid": ["doc 0", "doc 77"]}\n'),
            r"top_ranked\.jsonl:1: passage id 'doc 77' is not in corpus\.jsonl",
        ),
        (
            lambda r: (r / "top_ranked.jsonl").write_text('{"qid": "q1", "pid": ["doc 0"]}\n'),
            r"top_ranked\.jsonl: query 'q2' has no top_ranked passages",
        ),
        (lambda r: (r / "corpus.jsonl").write_text(""), r"corpus\.jsonl: the corpus is empty"),
    ],
)
def test_damaged_folders_name_file_line_and_field(tmp_path, damage, pattern):
    root = write_followir(tmp_path / "f")
    damage(root)
    with pytest.raises(DataError, match=pattern):
        read_followir(root)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="folder not found; expected a FollowIR / MTEB instruction folder"):
        read_followir(tmp_path / "nope")
