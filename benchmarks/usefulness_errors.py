"""What each row of the usefulness grid ranks first: gold, the question's own answer-bearing
distractor, its own decoy, or something else.

    python benchmarks/usefulness_errors.py [--grid experiments/ablations/usefulness.yaml] [--seeds 0 1 2]

The usefulness benchmark (``joint_rag/data/hard_negatives.py``) gives every question its own
decoys (``decoy-QUESTION-j``: the person and the question, no fact) and answer-bearing
distractors (``distractor-QUESTION-j``: a cousin's passage holding the answer string in another
role). The per-question records of the grid's runs (``questions.jsonl`` or the run records,
``top1`` = the passage ranked first, recorded since session 13) say which of them each trained
retriever puts first. Categories, in this order:

- ``gold``: recall@1 > 0 (the first passage is a gold passage);
- ``own_distractor`` / ``own_decoy``: one of this question's distractors / decoys;
- ``other_distractor`` / ``other_decoy``: another question's;
- ``other``: any other passage (another person's or an organisation's).

Per row: the fraction of questions in each category, the mean over the seeds that have ``top1``,
with the two-level (seeds x questions) bootstrap 95% interval of ``joint_rag.report``. Writes
``benchmarks/results/usefulness_errors_cpu.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import numpy as np

from joint_rag.ablation import finished_questions, load_grid
from joint_rag.atomic import write_json
from joint_rag.report import paired_bootstrap

CATEGORIES = ("gold", "own_distractor", "own_decoy", "other_distractor", "other_decoy", "other")


def category(question: str, record: dict) -> str:
    """The category of the passage a run ranked first for ``question`` (see the module doc)."""
    top1 = str(record["top1"])
    if record.get("recall@1", 0.0) > 0:
        return "gold"
    for kind in ("distractor", "decoy"):
        if top1.startswith(f"{kind}-{question}-"):
            return f"own_{kind}"
        if top1.startswith(f"{kind}-"):
            return f"other_{kind}"
    return "other"


def summarise(
    questions: dict[tuple[str, int], dict[str, dict]], order: list[str] | None = None
) -> dict[str, dict]:
    """row -> {"seeds": [...], "questions": n, category: {"mean", "low", "high"}} over the runs
    whose records have ``top1`` (the questions every such seed of the row evaluated); rows in
    ``order`` (the grid's) when given."""
    by_row: dict[str, dict[int, dict[str, dict]]] = {}
    rank = {row: i for i, row in enumerate(order or [])}
    for (row, seed), records in sorted(
        questions.items(), key=lambda kv: (rank.get(kv[0][0], len(rank)), kv[0][1])
    ):
        if records and all("top1" in r for r in records.values()):
            by_row.setdefault(row, {})[seed] = records
    out = {}
    for row, seeds in by_row.items():
        order = sorted(seeds)
        ids = sorted(set.intersection(*(set(seeds[s]) for s in order)))
        cats = [[category(q, seeds[s][q]) for q in ids] for s in order]
        out[row] = {"seeds": order, "questions": len(ids)}
        for name in CATEGORIES:
            hits = np.array([[c == name for c in row_cats] for row_cats in cats], dtype=np.float64)
            mean, low, high = paired_bootstrap(hits)
            out[row][name] = {"mean": mean, "low": low, "high": high}
    return out


def table(summary: dict[str, dict]) -> str:
    lines = [
        "| row | seeds | questions | " + " | ".join(CATEGORIES) + " |",
        "|---|---|---|" + "---|" * len(CATEGORIES),
    ]
    for row, s in summary.items():
        cells = [f"{s[c]['mean']:.3f} [{s[c]['low']:.3f}, {s[c]['high']:.3f}]" for c in CATEGORIES]
        lines.append(
            f"| {row} | {','.join(map(str, s['seeds']))} | {s['questions']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", default="experiments/ablations/usefulness.yaml")
    ap.add_argument("--out", default="benchmarks/results/usefulness_errors_cpu.json")
    ap.add_argument("--seeds", nargs="+", type=int, help="only these seeds (default: every finished one)")
    args = ap.parse_args(argv)
    grid = load_grid(args.grid)
    questions = {k: v for k, v in finished_questions(grid).items() if not args.seeds or k[1] in args.seeds}
    summary = summarise(questions, list(grid.variants))
    if not summary:
        print(f"no finished run of {args.grid} has top1 records", file=sys.stderr)
        return 1
    write_json(
        args.out,
        {
            "benchmark": "usefulness_errors",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python " + " ".join(sys.argv),
            "grid": args.grid,
            "seeds": args.seeds,
            "categories": list(CATEGORIES),
            "rows": summary,
        },
    )
    print(table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
