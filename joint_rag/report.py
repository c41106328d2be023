"""Ablation reports: mean ± std over seeds, the "beyond noise" mark, results.md/.csv/.png."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

from joint_rag.atomic import atomic_write

#: metric name patterns in report order (cut-offs as configured: recall@1, recall@5, ...)
METRIC_ORDER = (r"recall@\d+", r"all_gold@\d+", r"mrr@\d+", r"ndcg@\d+", r"em", r"f1", r"p_mrr")


def metric_names(rows: list[dict]) -> list[str]:
    """The metrics some row has, in report order (numeric cut-offs ascending)."""
    present = {k for r in rows for k in r}
    names: list[str] = []
    for pattern in METRIC_ORDER:
        found = [k for k in present if re.fullmatch(pattern, k)]
        names += sorted(found, key=lambda k: int(k.split("@")[1]) if "@" in k else 0)
    return names


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def summarise(
    variants: list[str], seeds: list[int], results: dict[tuple[str, int], dict]
) -> dict[str, dict[str, tuple[float, float]]]:
    """variant -> metric -> (mean, std) over the seeds run so far, plus "seeds": (count, 0)."""
    metrics = metric_names(list(results.values()))
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for variant in variants:
        rows = [results[(variant, s)] for s in seeds if (variant, s) in results]
        if rows:  # variants not run yet are left out of the table
            table[variant] = {m: mean_std([r[m] for r in rows]) for m in metrics if all(m in r for r in rows)}
            table[variant]["seeds"] = (float(len(rows)), 0.0)
    return table


def beyond_noise(a: tuple[float, float], b: tuple[float, float], n: int) -> bool:
    """|mean difference| > 2 standard errors of the difference (needs >= 2 seeds)."""
    if n < 2:
        return False
    se = math.sqrt((a[1] ** 2 + b[1] ** 2) / n)
    return abs(a[0] - b[0]) > 2 * se  # with zero spread on both sides any difference counts


def write_results(
    out: Path,
    title: str,
    base: str,
    variants: list[str],
    seeds: list[int],
    results: dict[tuple[str, int], dict],
    wall: float,
) -> Path:
    """results.md, results.csv and results.png in ``out``; returns the markdown file."""
    table = summarise(variants, seeds, results)
    metrics = [m for m in metric_names(list(results.values())) if any(m in row for row in table.values())]
    seeds_done = {v: int(row.pop("seeds")[0]) for v, row in table.items()}
    out.mkdir(parents=True, exist_ok=True)
    lines_csv = [["variant", "seed", *metrics]]
    for (variant, seed), row in sorted(results.items()):
        lines_csv.append([variant, seed, *[f"{row.get(m, float('nan')):.4f}" for m in metrics]])
    for variant, row in table.items():
        lines_csv.append([variant, "mean", *[f"{row[m][0]:.4f}" if m in row else "" for m in metrics]])
        lines_csv.append([variant, "std", *[f"{row[m][1]:.4f}" if m in row else "" for m in metrics]])
    buffer = io.StringIO()
    csv.writer(buffer).writerows(lines_csv)
    atomic_write(out / "results.csv", buffer.getvalue())
    frozen = table.get("frozen", {})
    lines = [
        f"# Ablation `{title}`",
        "",
        f"Base experiment `{base}`, seeds {seeds}, wall time {wall:.0f} s. Mean ± std over seeds; "
        "`*` marks a difference from the `frozen` row larger than two standard errors (needs >= 2 seeds).",
        "",
        "| variant | seeds | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for variant, row in table.items():
        cells = []
        for m in metrics:
            if m not in row:
                cells.append("-")
                continue
            k = min(seeds_done[variant], seeds_done.get("frozen", 0))
            mark = "*" if variant != "frozen" and m in frozen and beyond_noise(row[m], frozen[m], k) else ""
            cells.append(f"{row[m][0]:.3f} ± {row[m][1]:.3f}{mark}")
        lines.append(f"| {variant} | {seeds_done[variant]} | " + " | ".join(cells) + " |")
    lines += ["", "Per-seed values: `results.csv`. Plot: `results.png`.", ""]
    atomic_write(out / "results.md", "\n".join(lines))
    plot(table, metrics, out / "results.png")
    return out / "results.md"


def plot(table: dict, metrics: list[str], path: Path) -> None:
    """One bar chart per metric (mean with std error bars), variants on the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(table)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        means = [table[v][metric][0] if metric in table[v] else 0.0 for v in variants]
        stds = [table[v][metric][1] if metric in table[v] else 0.0 for v in variants]
        ax.bar(range(len(variants)), means, yerr=stds, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(variants)), variants, rotation=60, ha="right", fontsize=7)
        ax.set_title(metric)
        ax.set_ylim(min(0.0, *means), 1)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, image.getvalue())
