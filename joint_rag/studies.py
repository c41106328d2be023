"""Ablation runner: ``jrag ablate -c experiments/ablations/NAME.yaml``.

A grid file names a base experiment (a normal LightningCLI YAML), the seeds, and variants:
each variant is a set of dotted-key overrides of the base config (a key replaces the whole
value at that path, so ``model.objectives`` swaps the objective set). The standard menu below
is always included, so every table has the baseline rows: no retriever training, similarity
only, each usefulness objective, similarity + usefulness. Each run is a normal fit followed by
validation; finished runs (a ``metrics.json`` in their folder) are skipped, so an interrupted
ablation resumes. Results: ``results.md``, ``results.csv`` (mean ± std over seeds and every
per-seed value) and ``results.png`` in the ablation's folder.

Grid file::

    ablation:
      base: experiments/smoke.yaml
      out_dir: checkpoints/ablations/smoke
      seeds: [0, 1]
      menu: [frozen, similarity, end_to_end, rag_sequence, similarity+end_to_end]  # default: all
      frozen: train_generator   # or `untrained`: the frozen row trains nothing (max_steps 0)
      overrides: {trainer.max_steps: 10}          # applied to every run
      variants: {my_variant: {model.lr: 1.0e-3}}  # extra rows
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from joint_rag.cli import extra_command

METRICS = ("recall@1", "recall@5", "mrr@10", "ndcg@10", "em", "f1", "p_mrr")  # p_mrr: with instruction pairs


def _obj(class_name: str, **init_args) -> dict:
    entry: dict = {"class_path": f"joint_rag.losses.{class_name}"}
    if init_args:
        entry["init_args"] = init_args
    return entry


#: the standard menu: name -> overrides
MENU: dict[str, dict] = {
    "frozen": {  # retriever frozen (scores detached); the generator side (projector, generator) still trains
        "model.freeze_passage_encoder": True,
        "model.freeze_query_encoder": True,
        "model.objectives": {"end_to_end": _obj("EndToEnd")},
        "model.objective_weights": None,
    },
    "similarity": {
        "model.objectives": {"similarity": _obj("Similarity", temperature=0.05)},
        "model.objective_weights": None,
    },
    "end_to_end": {"model.objectives": {"end_to_end": _obj("EndToEnd")}, "model.objective_weights": None},
    "rag_sequence": {
        "model.objectives": {"rag_sequence": _obj("RAGSequence")},
        "model.objective_weights": None,
    },
    "rag_token": {"model.objectives": {"rag_token": _obj("RAGToken")}, "model.objective_weights": None},
    "pdist": {
        "model.objectives": {"end_to_end": _obj("EndToEnd"), "pdist": _obj("PerplexityDistillation")},
        "model.objective_weights": None,
    },
    "emdr2": {
        "model.objectives": {"end_to_end": _obj("EndToEnd"), "emdr2": _obj("EMDR2")},
        "model.objective_weights": None,
    },
    "lsr": {
        "model.objectives": {"end_to_end": _obj("EndToEnd"), "lsr": _obj("LMSupervisedRetrieval")},
        "model.objective_weights": None,
    },
    "similarity+end_to_end": {
        "model.objectives": {
            "similarity": _obj("Similarity", temperature=0.05),
            "end_to_end": _obj("EndToEnd"),
        },
        "model.objective_weights": None,
    },
    "similarity+generator": {  # similarity-trained retriever; the answer loss trains the generator only
        "model.objectives": {
            "similarity": _obj("Similarity", temperature=0.05),
            "end_to_end": _obj("EndToEnd", retriever_gradient=False),
        },
        "model.objective_weights": None,
    },
    "similarity+pdist": {
        "model.objectives": {
            "similarity": _obj("Similarity", temperature=0.05),
            "pdist": _obj("PerplexityDistillation", retriever_temperature=0.05),
        },
        "model.objective_weights": None,
    },
}
REQUIRED = ("frozen", "similarity")
USEFULNESS = ("end_to_end", "rag_sequence", "rag_token", "pdist", "emdr2", "lsr")
# note: in generator text mode, end_to_end trains no retriever (there is no memory to select
# through); use the marginal or distilled objectives there


class GridError(ValueError):
    """A malformed ablation grid file (the message names the file and the field)."""


def set_dotted(config: dict, key: str, value) -> None:
    """Set ``a.b.c`` in a nested dict (creating levels; replacing the value at the path)."""
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if value is None:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = copy.deepcopy(value)


@dataclass
class Grid:
    """A parsed grid file."""

    path: Path
    base: Path
    out_dir: Path
    seeds: list[int]
    variants: dict[str, dict]
    overrides: dict = field(default_factory=dict)
    retrieval_only: bool = False

    def runs(self) -> list[tuple[str, int]]:
        """Seed-major order, so an interrupted ablation has every variant on the first seeds."""
        return [(name, seed) for seed in self.seeds for name in self.variants]

    def config_for(self, variant: str, seed: int) -> dict:
        config = yaml.safe_load(self.base.read_text())
        for key, value in {**self.overrides, **self.variants[variant]}.items():
            set_dotted(config, key, value)
        config["seed_everything"] = seed
        run_dir = self.out_dir / "runs" / variant / f"seed{seed}"
        set_dotted(config, "trainer.default_root_dir", str(run_dir))
        return config


def load_grid(path: str | Path) -> Grid:
    """Parse and validate a grid file; errors name the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise GridError(f"{path}: cannot read ablation grid: {err}") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("ablation"), dict):
        raise GridError(f"{path}: expected a top-level 'ablation:' mapping")
    spec = raw["ablation"]
    unknown = set(spec) - {
        "base",
        "out_dir",
        "seeds",
        "menu",
        "variants",
        "overrides",
        "retrieval_only",
        "frozen",
    }
    if unknown:
        raise GridError(f"{path}: ablation: unknown fields {sorted(unknown)}")
    if "base" not in spec:
        raise GridError(f"{path}: ablation.base is missing (the experiment YAML every run starts from)")
    base = Path(spec["base"])
    if not base.is_file():
        raise GridError(f"{path}: ablation.base: file not found: {base}")
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise GridError(f"{path}: ablation.seeds must be a non-empty list of integers, got {seeds!r}")
    retrieval_only = bool(spec.get("retrieval_only", False))
    menu = spec.get("menu", list(MENU))
    bad = [m for m in menu if m not in MENU]
    if bad:
        raise GridError(f"{path}: ablation.menu: unknown entries {bad}; known: {list(MENU)}")
    required = ("frozen", "similarity") if retrieval_only else REQUIRED
    names = list(dict.fromkeys([*required, *menu]))
    if not retrieval_only and not any(m in names for m in USEFULNESS):
        names.append("end_to_end")
    if not retrieval_only and not any(m.startswith("similarity+") for m in names):
        names.append("similarity+end_to_end")
    variants = {name: MENU[name] for name in names}
    frozen = spec.get("frozen", "untrained" if retrieval_only else "train_generator")
    if frozen not in ("untrained", "train_generator"):
        raise GridError(f"{path}: ablation.frozen must be 'untrained' or 'train_generator', got {frozen!r}")
    if frozen == "untrained":  # the frozen row: off-the-shelf retriever, nothing trained at all
        variants["frozen"] = {"trainer.max_steps": 0}
    extra = spec.get("variants") or {}
    if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
        raise GridError(f"{path}: ablation.variants must map names to override mappings")
    variants.update(extra)
    overrides = spec.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise GridError(f"{path}: ablation.overrides must be a mapping of dotted keys to values")
    out_dir = Path(spec.get("out_dir", Path("checkpoints") / "ablations" / path.stem))
    return Grid(path, base, out_dir, seeds, variants, overrides, retrieval_only)


def run_one(grid: Grid, variant: str, seed: int) -> dict:
    """Fit + validate one run in-process; returns and stores its metrics (resumable)."""
    run_dir = grid.out_dir / "runs" / variant / f"seed{seed}"
    done = run_dir / "metrics.json"
    if done.exists():
        return json.loads(done.read_text())
    from joint_rag.cli import make_cli
    from joint_rag.quickstart import write_json_atomic

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(grid.config_for(variant, seed), sort_keys=False))
    t0 = time.perf_counter()
    cli = make_cli(["-c", str(cfg_path)], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    results = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    metrics = {k.removeprefix("val/"): float(v) for k, v in results.items() if k.startswith("val/")}
    metrics["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(done, metrics)
    return metrics


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def summarise(grid: Grid, results: dict[tuple[str, int], dict]) -> dict[str, dict[str, tuple[float, float]]]:
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for variant in grid.variants:
        rows = [results[(variant, s)] for s in grid.seeds if (variant, s) in results]
        if rows:  # variants not run yet are left out of the table
            table[variant] = {
                m: _mean_std([r[m] for r in rows]) for m in METRICS if all(m in r for r in rows)
            }
            table[variant]["seeds"] = (float(len(rows)), 0.0)
    return table


def beyond_noise(a: tuple[float, float], b: tuple[float, float], n: int) -> bool:
    """|mean difference| > 2 standard errors of the difference (needs >= 2 seeds)."""
    if n < 2:
        return False
    se = math.sqrt((a[1] ** 2 + b[1] ** 2) / n)
    return abs(a[0] - b[0]) > 2 * se  # with zero spread on both sides any difference counts


def write_results(grid: Grid, results: dict[tuple[str, int], dict], wall: float) -> Path:
    """results.md, results.csv and results.png in grid.out_dir."""
    table = summarise(grid, results)
    metrics = [m for m in METRICS if any(m in row for row in table.values())]
    seeds_done = {v: int(row.pop("seeds")[0]) for v, row in table.items()}
    out = grid.out_dir
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["variant", "seed", *metrics])
        for (variant, seed), row in sorted(results.items()):
            writer.writerow([variant, seed, *[f"{row.get(m, float('nan')):.4f}" for m in metrics]])
        for variant, row in table.items():
            writer.writerow([variant, "mean", *[f"{row[m][0]:.4f}" for m in metrics]])
            writer.writerow([variant, "std", *[f"{row[m][1]:.4f}" for m in metrics]])
    base = table.get("frozen", {})
    lines = [
        f"# Ablation `{grid.path}`",
        "",
        f"Base experiment `{grid.base}`, seeds {grid.seeds}, wall time {wall:.0f} s. Mean ± std over seeds; "
        "`*` marks a difference from the `frozen` row larger than two standard errors (needs >= 2 seeds).",
        "",
        "| variant | seeds | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for variant, row in table.items():
        cells = []
        for m in metrics:
            k = min(seeds_done[variant], seeds_done.get("frozen", 0))
            mark = "*" if variant != "frozen" and m in base and beyond_noise(row[m], base[m], k) else ""
            cells.append(f"{row[m][0]:.3f} ± {row[m][1]:.3f}{mark}")
        lines.append(f"| {variant} | {seeds_done[variant]} | " + " | ".join(cells) + " |")
    lines += ["", "Per-seed values: `results.csv`. Plot: `results.png`.", ""]
    (out / "results.md").write_text("\n".join(lines))
    _plot(table, metrics, out / "results.png")
    return out / "results.md"


def _plot(table: dict, metrics: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(table)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        means = [table[v][metric][0] for v in variants]
        stds = [table[v][metric][1] for v in variants]
        ax.bar(range(len(variants)), means, yerr=stds, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(variants)), variants, rotation=60, ha="right", fontsize=7)
        ax.set_title(metric)
        ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@extra_command("ablate")
def main_ablate(argv: list[str]) -> int:
    """``jrag ablate -c GRID.yaml [--only VARIANT ...]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="jrag ablate")
    parser.add_argument("-c", "--config", required=True, help="ablation grid YAML")
    parser.add_argument("--only", nargs="*", help="run only these variants (others still reported if done)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: write results.md/.csv/.png from the runs finished so far",
    )
    args = parser.parse_args(argv)
    try:
        grid = load_grid(args.config)
    except GridError as err:
        print(f"jrag ablate: {err}")
        return 2
    t0 = time.perf_counter()
    results = {}
    if args.report_only:
        for variant, seed in grid.runs():
            done = grid.out_dir / "runs" / variant / f"seed{seed}" / "metrics.json"
            if done.exists():
                results[(variant, seed)] = json.loads(done.read_text())
        if not results:
            print(f"jrag ablate: no finished runs under {grid.out_dir / 'runs'}")
            return 1
        # wall time: the finished runs' own (recorded) wall times, summed
        path = write_results(grid, results, sum(float(r.get("wall_seconds", 0.0)) for r in results.values()))
        print(path.read_text())
        return 0
    for variant, seed in grid.runs():
        if (
            args.only
            and variant not in args.only
            and not (grid.out_dir / "runs" / variant / f"seed{seed}" / "metrics.json").exists()
        ):
            continue
        print(f"[jrag ablate] {variant} seed {seed}")
        results[(variant, seed)] = run_one(grid, variant, seed)
    path = write_results(grid, results, time.perf_counter() - t0)
    print(path.read_text())
    return 0
