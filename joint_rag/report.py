"""Ablation reports: mean ± std over seeds, each row's paired bootstrap 95% interval of its
difference from the baseline row, the "beyond noise" mark, results.md/.csv/.json/.png.

The paired bootstrap (``paired_differences``, ``paired_bootstrap``): a row and the baseline are
paired by seed (the seeds both ran with per-question data) and by question id (the questions both
evaluated, with a finite value of the metric, in every one of those seeds), giving a matrix D
(seeds x questions) of row - baseline. Each of ``RESAMPLES`` resamples draws S seeds and Q
questions with replacement (crossed: one question draw for all drawn seeds, as every seed
evaluates the same questions) and takes the mean of D over the drawn (seed, question) cells; the
interval is the 2.5 / 97.5 percentiles of those means. "Beyond noise": the interval excludes 0.
Pairs without per-question data (runs older than ``questions.jsonl``, or p_mrr, which has no
per-question value) fall back to the mark of two standard errors of the difference of the means,
labelled as such.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from joint_rag.atomic import atomic_write, write_json

#: bootstrap resamples, the seed of their RNG (numpy ``default_rng``) and the interval's level
RESAMPLES = 2000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
#: below these, results.md warns that the intervals cannot tell much
MIN_SEEDS = 5
MIN_QUESTIONS = 300

#: a run's per-question metrics: question id -> metric -> value
Questions = dict[str, dict[str, float]]

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


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def paired_differences(
    row: dict[int, Questions], base: dict[int, Questions], metric: str
) -> tuple[np.ndarray, list[int], list[str]]:
    """D (seeds x questions) of ``row - base`` for one metric, with its seeds and question ids.

    ``row`` and ``base`` map seed -> that run's questions. Kept: the seeds both have (and where
    they share a question with a finite value), and the questions that both have, with a finite
    value, in every kept seed; the rest is dropped. Empty (0 x 0) when nothing pairs."""
    shared: dict[int, set[str]] = {}
    for seed in sorted(set(row) & set(base)):
        a, b = row[seed], base[seed]
        ids = {q for q in a.keys() & b.keys() if _finite(a[q].get(metric)) and _finite(b[q].get(metric))}
        if ids:
            shared[seed] = ids
    seeds = list(shared)
    ids = sorted(set.intersection(*shared.values())) if shared else []
    if not ids:
        return np.zeros((0, 0)), [], []
    diff = np.array([[row[s][q][metric] - base[s][q][metric] for q in ids] for s in seeds], dtype=np.float64)
    return diff, seeds, ids


def _counts(draws: np.ndarray, n: int) -> np.ndarray:
    """(B, n) how often each of n items was drawn in each row of ``draws`` (B, k)."""
    rows = draws.shape[0]
    flat = (draws + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def paired_bootstrap(
    diff: np.ndarray, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED, level: float = LEVEL
) -> tuple[float, float, float]:
    """(mean of D, low, high): the percentile interval of the two-level (seeds, questions) bootstrap.

    With ``rng = numpy.random.default_rng(seed)``: seed draws ``rng.integers(0, S, (resamples,
    S))``, then question draws ``rng.integers(0, Q, (resamples, Q))``; resample b's statistic is
    the mean of ``D[seeds_b][:, questions_b]`` (S x Q cells), computed from draw counts as
    ``w_seed @ D @ w_question / (S Q)``."""
    n_seeds, n_questions = diff.shape
    if diff.size == 0:
        raise ValueError("paired_bootstrap: no paired (seed, question) values")
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    question_draws = rng.integers(0, n_questions, size=(resamples, n_questions))
    stats = ((_counts(seed_draws, n_seeds) @ diff) * _counts(question_draws, n_questions)).sum(1)
    stats /= n_seeds * n_questions
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return float(diff.mean()), float(low), float(high)


@dataclass
class Difference:
    """One row's difference from the baseline in one metric."""

    delta: float  # bootstrap: mean of D; 2se: difference of the means over seeds
    low: float
    high: float
    beyond_noise: bool
    method: str  # "bootstrap" (paired 95% interval) or "2se" (mean difference ± 2 standard errors)
    seeds: int  # seeds used
    questions: int | None  # questions used (None for 2se)


def compare(
    table: dict[str, dict[str, tuple[float, float]]],
    seeds_done: dict[str, int],
    metrics: list[str],
    questions: dict[tuple[str, int], Questions],
    baseline: str,
) -> dict[str, dict[str, Difference]]:
    """variant -> metric -> its difference from ``baseline`` (every row but the baseline)."""
    by_seed: dict[str, dict[int, Questions]] = {}
    for (variant, seed), records in questions.items():
        by_seed.setdefault(variant, {})[seed] = records
    out: dict[str, dict[str, Difference]] = {}
    base_row = table.get(baseline)
    if base_row is None:
        return out
    for variant, row in table.items():
        if variant == baseline:
            continue
        out[variant] = {}
        for m in metrics:
            if m not in row or m not in base_row:
                continue
            diff, seeds, ids = paired_differences(by_seed.get(variant, {}), by_seed.get(baseline, {}), m)
            if diff.size:
                delta, low, high = paired_bootstrap(diff)
                out[variant][m] = Difference(
                    delta, low, high, low > 0 or high < 0, "bootstrap", len(seeds), len(ids)
                )
            else:  # no per-question data: two standard errors of the difference of the means
                k = min(seeds_done[variant], seeds_done[baseline])
                a, b = row[m], base_row[m]
                se = math.sqrt((a[1] ** 2 + b[1] ** 2) / k) if k >= 2 else math.nan
                delta = a[0] - b[0]
                out[variant][m] = Difference(
                    delta, delta - 2 * se, delta + 2 * se, beyond_noise(a, b, k), "2se", k, None
                )
    return out


def _span(values: list[int]) -> str:
    return (
        "-"
        if not values
        else str(min(values))
        if min(values) == max(values)
        else f"{min(values)}-{max(values)}"
    )


def write_results(
    out: Path,
    title: str,
    base: str,
    variants: list[str],
    seeds: list[int],
    results: dict[tuple[str, int], dict],
    wall: float,
    questions: dict[tuple[str, int], Questions] | None = None,
    baseline: str = "frozen",
    notes: list[str] | None = None,
) -> Path:
    """results.md, results.csv, results.json and results.png in ``out``; returns the markdown file.

    ``questions``: the per-question metrics of the runs that have them (``questions.jsonl``);
    without them every comparison falls back to two standard errors. ``notes``: warnings printed
    under the title (for example runs recorded with other settings)."""
    table = summarise(variants, seeds, results)
    metrics = [m for m in metric_names(list(results.values())) if any(m in row for row in table.values())]
    seeds_done = {v: int(row.pop("seeds")[0]) for v, row in table.items()}
    questions = {k: v for k, v in (questions or {}).items() if k in results}
    diffs = compare(table, seeds_done, metrics, questions, baseline)
    out.mkdir(parents=True, exist_ok=True)
    lines_csv = [["variant", "seed", *metrics]]
    for (variant, seed), row in sorted(results.items()):
        lines_csv.append([variant, seed, *[f"{row.get(m, float('nan')):.4f}" for m in metrics]])
    for variant, row in table.items():
        lines_csv.append([variant, "mean", *[f"{row[m][0]:.4f}" if m in row else "" for m in metrics]])
        lines_csv.append([variant, "std", *[f"{row[m][1]:.4f}" if m in row else "" for m in metrics]])
    fields = {
        "delta": lambda d: f"{d.delta:.4f}",
        "ci_low": lambda d: f"{d.low:.4f}",
        "ci_high": lambda d: f"{d.high:.4f}",
        "beyond_noise": lambda d: str(int(d.beyond_noise)),
        "method": lambda d: d.method,
        "paired_seeds": lambda d: str(d.seeds),
        "paired_questions": lambda d: "" if d.questions is None else str(d.questions),
    }
    for variant, row in diffs.items():
        for name, cell in fields.items():
            lines_csv.append([variant, name, *[cell(row[m]) if m in row else "" for m in metrics]])
    buffer = io.StringIO()
    csv.writer(buffer).writerows(lines_csv)
    atomic_write(out / "results.csv", buffer.getvalue())
    write_json(
        out / "results.json",
        {
            "baseline": baseline,
            "seeds": seeds,
            "bootstrap": {"resamples": RESAMPLES, "seed": BOOTSTRAP_SEED, "level": LEVEL},
            "rows": {
                v: {
                    "seeds": seeds_done[v],
                    "metrics": {m: {"mean": row[m][0], "std": row[m][1]} for m in metrics if m in row},
                    "difference": {m: asdict(d) for m, d in diffs.get(v, {}).items()},
                }
                for v, row in table.items()
            },
        },
    )
    used = [d for row in diffs.values() for d in row.values() if d.method == "bootstrap"]
    n_seeds = min([d.seeds for d in used], default=min(seeds_done.values(), default=0))
    counts = [d.questions for d in used] or [
        int(r["questions"]) for r in results.values() if "questions" in r
    ]
    n_questions = min(counts, default=None)
    lines = [
        f"# Ablation `{title}`",
        "",
        f"Base experiment `{base}`, seeds {seeds}, wall time {wall:.0f} s. Mean ± std over seeds; "
        f"`*` marks a difference from the baseline row `{baseline}` whose paired bootstrap 95% "
        "interval excludes 0 (beyond noise; the intervals are in the table below); `†` marks one "
        "larger than two standard errors of the difference of the means, the fallback where the "
        "runs have no per-question data (needs >= 2 seeds).",
        "",
    ]
    short = []
    if n_seeds < MIN_SEEDS:
        short.append(f"{n_seeds} seed{'s' if n_seeds != 1 else ''} (fewer than {MIN_SEEDS})")
    if n_questions is not None and n_questions < MIN_QUESTIONS:
        short.append(f"{n_questions} evaluation questions (fewer than {MIN_QUESTIONS})")
    for note in notes or []:
        lines += [f"**Note:** {note}", ""]
    if short:
        lines += [
            f"**Warning:** the intervals use {' and '.join(short)}: too few to tell small differences "
            "from noise; use more where the data allows.",
            "",
        ]
    lines += [
        "| variant | seeds | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for variant, row in table.items():
        cells = []
        for m in metrics:
            if m not in row:
                cells.append("-")
                continue
            d = diffs.get(variant, {}).get(m)
            mark = "" if d is None or not d.beyond_noise else "*" if d.method == "bootstrap" else "†"
            cells.append(f"{row[m][0]:.3f} ± {row[m][1]:.3f}{mark}")
        lines.append(f"| {variant} | {seeds_done[variant]} | " + " | ".join(cells) + " |")
    if diffs:
        lines += [
            "",
            f"## Difference from `{baseline}`: paired bootstrap 95% intervals",
            "",
            f"Δ = mean over the paired (seed, question) of row − `{baseline}` (the seeds both ran, the "
            f"questions both evaluated); [low, high] = 2.5 / 97.5 percentiles of {RESAMPLES} resamples "
            f"drawing seeds and questions with replacement (numpy RNG seed {BOOTSTRAP_SEED}); `*`: the "
            "interval excludes 0. `(2 SE)`: no per-question data, Δ of the means and Δ ± 2 standard "
            "errors, `†` when that excludes 0. Paired seeds and questions: what the intervals used.",
            "",
            "| variant | paired seeds | questions | " + " | ".join(metrics) + " |",
            "|---|---|---|" + "---|" * len(metrics),
        ]
        for variant, row in diffs.items():
            cells = []
            for m in metrics:
                d = row.get(m)
                if d is None:
                    cells.append("-")
                elif d.method == "bootstrap":
                    cells.append(
                        f"{d.delta:+.3f} [{d.low:+.3f}, {d.high:+.3f}]{'*' if d.beyond_noise else ''}"
                    )
                else:
                    cells.append(
                        f"{d.delta:+.3f} [{d.low:+.3f}, {d.high:+.3f}] (2 SE){'†' if d.beyond_noise else ''}"
                    )
            boot = [d for d in row.values() if d.method == "bootstrap"]
            seeds_cell = (
                _span([d.seeds for d in boot]) if boot else f"{_span([d.seeds for d in row.values()])} (2 SE)"
            )
            lines.append(
                f"| {variant} | {seeds_cell} | {_span([d.questions for d in boot])} | "
                + " | ".join(cells)
                + " |"
            )
    lines += ["", "Per-seed values and intervals: `results.csv`, `results.json`. Plot: `results.png`.", ""]
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
