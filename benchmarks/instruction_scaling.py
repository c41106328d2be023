"""Curves of the instruction-data study (issue: count apart from exposure, unseen families,
signals, models) from the finished runs of ``jrag ablate -c experiments/ablations/instruction_scaling.yaml``.

    python benchmarks/instruction_scaling.py [--grid experiments/ablations/instruction_scaling.yaml]
        [--out benchmarks/results/instruction_scaling_cpu.json] [--plot docs/results/instruction_scaling.png]
        [--pair ROW OTHER ...]

Per row: the mean over seeds of p-MRR on seen and on unseen instruction families, of nDCG@10 on
ordinary held-out questions and under the original / changed instruction, each with the
two-level (seeds x pairs or questions) bootstrap 95% interval of its mean (``report.paired_bootstrap``
on the row's own per-pair values), and the paired interval of its difference from ``n0`` (same
seeds, same pairs). Trains nothing; run it again as more seeds finish.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import re
import statistics
from collections.abc import Collection
from pathlib import Path

import numpy as np

from joint_rag.ablation import finished, finished_questions, load_grid, read_questions
from joint_rag.atomic import atomic_write, write_json
from joint_rag.provenance import machine
from joint_rag.report import paired_bootstrap, paired_differences

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "experiments" / "ablations" / "instruction_scaling.yaml"
OUT = REPO / "benchmarks" / "results" / "instruction_scaling_cpu.json"
METRICS = ("p_mrr_seen", "p_mrr_unseen", "ndcg@10", "instruction_ndcg@10_og", "instruction_ndcg@10_new")
BASELINE = "n0"


def row_kind(row: str) -> tuple[str, int] | None:
    """``n256`` -> ("similarity", 256), ``rl_n16`` -> ("rl", 16), ``tiny_n0`` -> ("tiny", 0),
    ``lsr_n256`` -> ("lsr", 256), ``smollm2_n0`` -> ("smollm2", 0)."""
    m = re.fullmatch(r"(?:(rl|lsr|tiny|smollm2)_)?n(\d+)", row)
    return (m.group(1) or "similarity", int(m.group(2))) if m else None


def load(grid: Path) -> dict[str, dict[int, dict]]:
    """row -> seed -> {"metrics": ..., "questions": ...} of the finished runs: of a grid file
    (``*.yaml``: its run folders, else its run records, so a fresh clone has them) or of an
    ``out_dir`` folder (its run folders)."""
    out: dict[str, dict[int, dict]] = {}
    if grid.suffix in (".yaml", ".yml"):
        spec = load_grid(grid)
        questions = finished_questions(spec)
        for (row, seed), metrics in finished(spec).items():
            out.setdefault(row, {})[seed] = {"metrics": metrics, "questions": questions.get((row, seed), {})}
        return out
    for done in sorted(grid.glob("runs/*/seed*/metrics.json")):
        row, seed = done.parent.parent.name, int(done.parent.name.removeprefix("seed"))
        questions = done.parent / "questions.jsonl"
        out.setdefault(row, {})[seed] = {
            "metrics": json.loads(done.read_text()),
            "questions": read_questions(questions) if questions.is_file() else {},
        }
    return out


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and np.isfinite(value)


def comparisons(row: str, rows: Collection[str] = ()) -> dict[str, str]:
    """What a row is compared with (paired, same seeds and pairs): ``vs_n0`` its model's and
    signal's N = 0 row (ordinary questions only; for Reinforce ``rl_n0`` when ``rows`` has it,
    else ``n0``: a grid without it trains Reinforce only where instruction examples exist);
    ``vs_similarity`` for a Reinforce or LSR row, the similarity row of the same N (which signal
    teaches more from the same examples)."""
    rk = row_kind(row)
    if rk is None:
        return {"vs_n0": BASELINE}
    kind, n = rk
    out = {}
    zero = BASELINE if kind == "similarity" or (kind == "rl" and "rl_n0" not in rows) else f"{kind}_n0"
    if row != zero:
        out["vs_n0"] = zero
    if kind in ("rl", "lsr"):
        out["vs_similarity"] = f"n{n}"
    return out


def paired(runs: dict[str, dict[int, dict]], row: str, other: str, metric: str) -> dict | None:
    """``row`` − ``other`` on ``metric``, paired over their common seeds and items (None when they
    share none)."""
    questions = {s: r["questions"] for s, r in runs[row].items()}
    base = {s: r["questions"] for s, r in runs[other].items()}
    diff, used, items = paired_differences(questions, base, metric)
    if not diff.size:
        return None
    delta, low, high = paired_bootstrap(diff)
    return {"row": other, "delta": delta, "interval": [low, high], "seeds": len(used), "items": len(items),
            "beyond_noise": bool(low > 0 or high < 0)}  # fmt: skip


def summarise(runs: dict[str, dict[int, dict]]) -> dict[str, dict]:
    table = {}
    for row, seeds in runs.items():
        entry = {
            "seeds": sorted(seeds),
            "wall_seconds": [seeds[s]["metrics"]["wall_seconds"] for s in sorted(seeds)],
        }
        questions = {s: r["questions"] for s, r in seeds.items()}
        for m in METRICS:
            per_seed = [seeds[s]["metrics"].get(m) for s in sorted(seeds)]
            if any(v is None for v in per_seed):
                continue
            ids = sorted(
                set.intersection(
                    *({q for q, v in qs.items() if _finite(v.get(m))} for qs in questions.values())
                )
            )
            values = np.array([[questions[s][q][m] for q in ids] for s in sorted(questions)] if ids else [])
            item = {"mean": statistics.fmean(per_seed), "per_seed": per_seed}
            if values.size:
                _, low, high = paired_bootstrap(values)
                item["interval"] = [low, high]
                item["items"] = values.shape[1]
            for key, other in comparisons(row, runs).items():
                if other in runs and (d := paired(runs, row, other, m)) is not None:
                    item[key] = d
            entry[m] = item
        table[row] = entry
    return table


def plot(table: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("p_mrr_seen", "p-MRR, seen families"),
        ("p_mrr_unseen", "p-MRR, unseen families"),
        ("instruction_ndcg@10_new", "nDCG@10 under the changed instruction"),
        ("ndcg@10", "nDCG@10, ordinary questions"),
    )
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    ns = sorted({rk[1] for row in table if (rk := row_kind(row))})
    lines = {"similarity": ("C0", "MiniLM, similarity"), "rl": ("C1", "MiniLM, Reinforce (nDCG)"),
             "tiny": ("C2", "tiny random encoder, similarity"), "smollm2": ("C3", "SmolLM2, similarity"),
             "lsr": ("C4", "MiniLM, LSR (SmolLM2 reader, no labels)")}  # fmt: skip
    for ax, (metric, title) in zip(axes, panels):
        for kind, (color, label) in lines.items():
            pts = sorted(
                (n, table[row][metric]) for row in table if (rk := row_kind(row)) and rk[0] == kind
                for n in [rk[1]] if metric in table[row]
            )  # fmt: skip
            if kind == "rl" and pts and pts[0][0] > 0 and "n0" in table and metric in table["n0"]:
                pts = [(0, table["n0"][metric]), *pts]  # no rl_n0 row: Reinforce starts from n0
            if not pts:
                continue
            xs = [max(n, 4) for n, _ in pts]  # N = 0 drawn at 4 on the log axis
            ys = [p["mean"] for _, p in pts]
            lo = [p["mean"] - p.get("interval", [p["mean"]] * 2)[0] for _, p in pts]
            hi = [p.get("interval", [p["mean"]] * 2)[1] - p["mean"] for _, p in pts]
            ax.errorbar(xs, ys, yerr=[lo, hi], color=color, marker="o", ms=4, capsize=3, label=label)
        if "frozen" in table and metric in table["frozen"]:
            ax.axhline(
                table["frozen"][metric]["mean"], color="gray", ls="--", lw=1, label="off-the-shelf MiniLM"
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks([max(n, 4) for n in ns], [str(n) for n in ns], fontsize=7)
        ax.set_xlabel("distinct instruction examples N (fixed exposure)")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()  # rendered whole, then renamed into place: no half-written image
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def delta_text(d: dict) -> str:
    """A paired difference as ``+0.012 [+0.003, +0.020]*`` (``*``: its interval excludes 0)."""
    return f"{d['delta']:+.3f} [{d['interval'][0]:+.3f}, {d['interval'][1]:+.3f}]" + (
        "*" if d["beyond_noise"] else ""
    )


def markdown(table: dict[str, dict]) -> str:
    def cell(item: dict | None, diff: bool = True) -> str:
        if item is None:
            return "–"
        s = f"{item['mean']:.3f}"
        if "interval" in item:
            s += f" [{item['interval'][0]:.3f}, {item['interval'][1]:.3f}]"
        d = item.get("vs_n0")
        if diff and d:
            s += f"; Δ {delta_text(d)}"
        return s

    head = (
        "| row | seeds | p-MRR seen | p-MRR unseen | nDCG@10 ordinary | nDCG@10 original instruction "
        "| nDCG@10 changed instruction |\n|---|---:|---|---|---|---|---|\n"
    )
    body = ""
    for row, e in table.items():
        cells = " | ".join(cell(e.get(m)) for m in METRICS)
        body += f"| {row} | {len(e['seeds'])} | {cells} |\n"
    signal = ""
    for row, e in table.items():
        rk = row_kind(row)
        if rk is None or rk[0] not in ("rl", "lsr"):
            continue
        cells = []
        for m in ("p_mrr_seen", "p_mrr_unseen", "instruction_ndcg@10_new"):
            d = e.get(m, {}).get("vs_similarity")
            cells.append("–" if d is None else f"{delta_text(d)} ({d['seeds']} seeds)")
        signal += f"| {row} | {rk[1]} | " + " | ".join(cells) + " |\n"
    if signal:
        signal = (
            "\n| row | N | row − similarity at the same N: p-MRR seen | p-MRR unseen | nDCG@10 changed instruction |\n"
            "|---|---:|---|---|---|\n" + signal
        )
    return head + body + signal


def order(row: str) -> tuple:
    rk = row_kind(row)
    kinds = ["similarity", "rl", "lsr", "tiny", "smollm2"]
    return (-1, 0) if rk is None else (kinds.index(rk[0]), rk[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=GRID)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--plot", type=Path)
    parser.add_argument(
        "--pair", nargs=2, action="append", default=[], metavar=("ROW", "OTHER"),
        help="also report ROW - OTHER, paired (repeatable), e.g. --pair n4096 n1024",
    )  # fmt: skip
    args = parser.parse_args()
    runs = load(args.grid)
    if not runs:
        raise SystemExit(f"{args.grid}: no finished runs (runs/ROW/seedS/metrics.json or run records)")
    summary = summarise(runs)
    table = {row: summary[row] for row in sorted(runs, key=order)}
    pairs = {}
    for row, other in args.pair:
        if missing := [r for r in (row, other) if r not in runs]:
            raise SystemExit(f"--pair {row} {other}: no finished runs of {', '.join(missing)}")
        pairs[f"{row} - {other}"] = {m: paired(runs, row, other, m) for m in METRICS}
    write_json(
        args.out,
        {
            "benchmark": "instruction_scaling",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine("cpu"),
            "grid": str(args.grid.relative_to(REPO) if args.grid.is_relative_to(REPO) else args.grid),
            "baseline": BASELINE,
            "rows": table,
            "pairs": pairs,
        },
    )
    if args.plot:
        plot(table, args.plot)
    print(markdown(table))
    for name, by_metric in pairs.items():
        cells = [
            f"{m} " + ("–" if d is None else f"{delta_text(d)} ({d['seeds']} seeds)")
            for m, d in by_metric.items()
        ]
        print(f"{name}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
