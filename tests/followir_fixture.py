"""A FollowIR / MTEB instruction folder written for tests (``tests/data/test_followir.py``,
``tests/test_instructions.py``)."""

from __future__ import annotations

import json
from pathlib import Path


def write_followir(root: Path, top_ranked: list[dict] | None = None) -> Path:
    """Three queries over six documents (ids with spaces): q1 narrows 3 relevant to 1, q2 keeps
    its one relevant, q3 has nothing relevant under the original (left out)."""
    (root / "qrels_og").mkdir(parents=True)
    (root / "qrels_changed").mkdir()
    docs = [{"_id": f"doc {i}", "title": "", "text": f"text {i}"} for i in range(6)]
    queries = [
        {
            "_id": "q1",
            "text": "oboe players",
            "instruction_og": "Any player.",
            "instruction_changed": "Only in Porto.",
        },
        {"_id": "q2", "text": "lisbon", "instruction_og": "Any.", "instruction_changed": "Any, again."},
        {"_id": "q3", "text": "nothing", "instruction_og": "x", "instruction_changed": "y"},
    ]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    og = [
        "query-id\tcorpus-id\tscore",
        "q1\tdoc 0\t2",
        "q1\tdoc 1\t1",
        "q1\tdoc 2\t1",
        "q2\tdoc 3\t1",
        "q3\tdoc 4\t0",
    ]
    (root / "qrels_og" / "test.tsv").write_text("\n".join(og) + "\n")
    changed = ["query-id\tcorpus-id\tscore", "q1\tdoc 1\t1", "q1\tdoc 0\t0", "q2\tdoc 3\t1"]
    (root / "qrels_changed" / "test.tsv").write_text("\n".join(changed) + "\n")
    if top_ranked is not None:
        (root / "top_ranked.jsonl").write_text("".join(json.dumps(r) + "\n" for r in top_ranked))
    return root
