"""``jrag evaluate``: an export ranked on another BEIR folder's corpus, metrics equal to a direct
computation from ``JointRAG.retrieve``, intervals, per-query lines, and its errors."""

from __future__ import annotations

import json

import pytest
from smoke_fit import fit_smoke  # (tests/ is on sys.path under pytest)

from joint_rag.cli import main
from joint_rag.data.limit_style import LimitStyleSource
from joint_rag.export import export_checkpoint
from joint_rag.pipeline import JointRAG


def _beir_from_limit_style(root):
    data = LimitStyleSource(num_people=8, num_queries=20, val_fraction=0.0).load()
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": p.passage_id, "text": p.text}) + "\n" for p in data.corpus)
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": e.example_id, "text": e.query}) + "\n" for e in data.train)
    )
    lines = ["query-id\tcorpus-id\tscore"] + [
        f"{e.example_id}\t{g}\t1" for e in data.train for g in e.gold_passage_ids
    ]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return data


def test_jrag_evaluate_on_another_corpus(tmp_path, capsys):
    _, ckpt = fit_smoke(tmp_path / "run")
    export = export_checkpoint(ckpt, tmp_path / "export")
    data = _beir_from_limit_style(tmp_path / "beir")
    out, per_query = tmp_path / "eval.json", tmp_path / "q.jsonl"
    args = ["evaluate", "--model", str(export), "--beir", str(tmp_path / "beir"), "--recall-at", "2", "5"]
    assert main([*args, "--out", str(out), "--per-query", str(per_query)]) == 0
    result = json.loads(out.read_text())
    assert (result["queries"], result["passages"]) == (20, 8)
    rag = JointRAG.from_pretrained(export)
    rag.system.attach_corpus(data.corpus)
    hits = [
        len({pid for pid, _ in top} & set(ex.gold_passage_ids)) / 2
        for ex, top in zip(data.train, rag.retrieve([e.query for e in data.train], k=2))
    ]
    assert result["recall@2"] == pytest.approx(sum(hits) / len(hits), abs=1e-6)
    lo, hi = result["ci95"]["recall@5"]
    assert lo <= result["recall@5"] <= hi
    assert len(per_query.read_text().splitlines()) == 20
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", str(export), "--beir", str(tmp_path / "none")])
    assert "folder not found" in capsys.readouterr().err
    (tmp_path / "beir" / "qrels" / "test.tsv").write_text("q\tp\ts\nlimit-style-0\tNobody Here\t1\n")
    with pytest.raises(SystemExit):
        main(args)
    assert "passage id 'Nobody Here' is not in corpus.jsonl" in capsys.readouterr().err
