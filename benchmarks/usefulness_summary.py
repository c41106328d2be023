"""The usefulness grid's table: per row, recall@1 per seed, mean ± std, and the paired intervals
of its difference from several baseline rows at once.

    python benchmarks/usefulness_summary.py [--grid experiments/ablations/usefulness.yaml]
        [--baselines distant_supervision lsr reinforce] [--seeds 0 1 2] [--plot docs/results/usefulness.png]

Reads the grid's finished runs (run folders, else the run records under
``benchmarks/results/ablations/usefulness``), so it works in a fresh clone and can be rerun as
seeds finish. Intervals: ``joint_rag.report``'s two-level paired bootstrap over (seed, question),
on the seeds both rows ran; "beyond noise" = the interval excludes 0. Labels: ``gold`` for rows
that read relevance labels, ``none`` for ``model.relevance_labels: false``, ``-`` for the
untrained row. Writes ``benchmarks/results/usefulness_grid_cpu.json`` and prints markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
from pathlib import Path

from joint_rag.ablation import finished, finished_questions, load_grid
from joint_rag.atomic import write_json
from joint_rag.report import metric_names, paired_bootstrap, paired_differences, plot, summarise

METRIC = "recall@1"


def labels(settings: dict) -> str:
    if settings.get("trainer.max_steps") == 0:
        return "-"
    return "none" if settings.get("model.relevance_labels") is False else "gold"


def differences(questions: dict, row: str, base: str, metric: str) -> dict | None:
    """The paired bootstrap of ``row - base`` (None when they share no seed with per-question data)."""
    by_seed = {r: {s: q for (v, s), q in questions.items() if v == r} for r in (row, base)}
    diff, seeds, ids = paired_differences(by_seed[row], by_seed[base], metric)
    if not diff.size:
        return None
    delta, low, high = paired_bootstrap(diff)
    return {
        "delta": delta,
        "low": low,
        "high": high,
        "beyond_noise": bool(low > 0 or high < 0),
        "seeds": seeds,
        "questions": len(ids),
    }


def build(grid_file: str, baselines: list[str], seeds: list[int] | None = None) -> dict:
    """The summary over the finished runs (of ``seeds`` only, when given)."""
    grid = load_grid(grid_file)
    keep = (lambda seed: seed in seeds) if seeds else (lambda seed: True)
    results = {k: v for k, v in finished(grid).items() if keep(k[1])}
    questions = {k: v for k, v in finished_questions(grid).items() if keep(k[1])}
    rows = {}
    for row in grid.variants:
        row_seeds = sorted(s for v, s in results if v == row)
        if not row_seeds:
            continue
        values = [results[(row, s)][METRIC] for s in row_seeds]
        rows[row] = {
            "labels": labels(grid.variants[row]),
            "seeds": row_seeds,
            METRIC: values,
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "means": {
                m: statistics.fmean(results[(row, s)][m] for s in row_seeds)
                for m in ("recall@5", "mrr@10", "ndcg@10")
                if all(m in results[(row, s)] for s in row_seeds)
            },
            "wall_seconds": [results[(row, s)].get("wall_seconds") for s in row_seeds],
            "vs": {b: differences(questions, row, b, METRIC) for b in baselines if b != row},
        }
    return {
        "grid": grid_file,
        "metric": METRIC,
        "baselines": baselines,
        "seeds": seeds,
        "rows": rows,
        "_results": results,
    }


def markdown(summary: dict) -> str:
    base = summary["baselines"]
    head = "| row | labels | seeds | recall@1 per seed | mean ± std | mrr@10 | " + " | ".join(
        f"Δ vs {b} [95%]" for b in base
    )
    lines = [head + " |", "|---|---|---|---|---|---|" + "---|" * len(base)]
    for row, r in summary["rows"].items():
        cells = []
        for b in base:
            d = r["vs"].get(b)
            cells.append(
                "–"
                if d is None
                else f"{d['delta']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{'*' if d['beyond_noise'] else ''}"
            )
        per_seed = ", ".join(f"{v:.3f}" for v in r[METRIC])
        mrr = r["means"].get("mrr@10", float("nan"))
        lines.append(
            f"| {row} | {r['labels']} | {len(r['seeds'])} | {per_seed} | {r['mean']:.3f} ± {r['std']:.3f} | "
            f"{mrr:.3f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", default="experiments/ablations/usefulness.yaml")
    ap.add_argument("--baselines", nargs="+", default=["distant_supervision", "lsr", "reinforce"])
    ap.add_argument("--out", default="benchmarks/results/usefulness_grid_cpu.json")
    ap.add_argument("--plot", type=Path, help="bar chart of every metric (mean ± std over seeds)")
    ap.add_argument("--seeds", nargs="+", type=int, help="only these seeds (default: every finished one)")
    args = ap.parse_args(argv)
    summary = build(args.grid, args.baselines, args.seeds)
    results = summary.pop("_results")
    if not summary["rows"]:
        print(f"{args.grid}: no finished runs", file=sys.stderr)
        return 1
    write_json(
        args.out,
        {
            "benchmark": "usefulness_grid",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python " + " ".join(sys.argv),
            **summary,
        },
    )
    if args.plot:
        variants = list(summary["rows"])
        seeds = sorted({s for _, s in results})
        table = summarise(variants, seeds, results)
        for row in table.values():
            row.pop("seeds")
        plot(table, [m for m in metric_names(list(results.values())) if m != "questions"], args.plot)
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
