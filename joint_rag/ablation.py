"""Ablation runner: ``jrag ablate -c experiments/ablations/NAME.yaml``.

A grid file names the base experiment (one YAML, or a list applied in order like several
``-c``), the seeds, and variants: each variant is a set of dotted-key overrides of the base
config, passed to LightningCLI as ``--key=<JSON>`` flags (a key replaces the whole value at that
path, so ``model.objectives`` swaps the objective set). The standard rows come from the menu file
(``menu_file:``, else ``menu.yaml`` next to the grid, else experiments/ablations/menu.yaml), where the objectives' settings live; the
runner always adds the baseline rows: no retriever training (``frozen``), similarity only, a
usefulness row and a similarity + usefulness row. Each run is a normal fit followed by
validation; a finished run (``metrics.json`` in its folder) is skipped, so an interrupted
ablation resumes. Each run also writes ``questions.jsonl`` (one line per evaluated question:
its example id and that question's metrics; written before ``metrics.json``, so every run
finished since has both; under DDP it holds rank 0's questions only). Runs finished before
that have only ``metrics.json``: they still count, without paired data. Reports:
``joint_rag.report`` (results.md, results.csv, results.json, results.png): every row's paired
bootstrap 95% interval of its difference from the ``baseline`` row (same seeds, same questions).

Run records (``records: FOLDER``, optional). Run folders live under ``out_dir`` (checkpoints/,
git-ignored), so a fresh clone has none and would rerun every cell. With ``records`` set, each
finished run is also written as one JSON file, ``FOLDER/VARIANT/seedS.json``: its metrics, its
per-question metrics, the machine, the git commit, and the SHA-256 of its resolved settings
(the base files as parsed plus the run's override flags). A folder under version control (the
shipped grids use ``benchmarks/results/ablations/NAME``) makes a grid accumulate across
sessions and machines: a run counts as finished when its folder or its record says so, and runs
finished before records existed get one at the next ``jrag ablate``. A record whose settings
hash differs from the grid's current one still counts and is listed in the report as made with
other settings.

Grid file::

    ablation:
      base: [experiments/quickstart.yaml, experiments/ablations/base/synthetic.yaml]
      out_dir: checkpoints/ablations/synthetic
      seeds: [0, 1]
      menu: [frozen, similarity, end_to_end, rag_sequence, similarity+end_to_end]  # default: all
      frozen: train_generator   # or `untrained`: the frozen row trains nothing (max_steps 0)
      baseline: frozen          # the row every other row is compared with (default: frozen)
      overrides: {trainer.max_steps: 10}          # applied to every run
      variants: {my_variant: {model.lr: 1.0e-3}}  # extra rows
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from joint_rag.atomic import atomic_write, write_json
from joint_rag.config import build, override
from joint_rag.errors import GridError
from joint_rag.provenance import git_commit, machine

REQUIRED = ("frozen", "similarity")
USEFULNESS = ("end_to_end", "rag_sequence", "rag_token", "pdist", "emdr2", "lsr")
# note: in generator text mode, end_to_end trains no retriever (there is no memory to select
# through); use the marginal or distilled objectives there
FIELDS = (
    "base",
    "out_dir",
    "seeds",
    "menu",
    "menu_file",
    "variants",
    "overrides",
    "retrieval_only",
    "frozen",
    "baseline",
    "records",
)
#: version of the run-record files (``records:``); newer files are refused by name
RECORD_FORMAT = 1


@dataclass
class Grid:
    """A parsed grid file."""

    path: Path
    bases: list[Path]
    out_dir: Path
    seeds: list[int]
    variants: dict[str, dict]
    overrides: dict = field(default_factory=dict)
    retrieval_only: bool = False
    baseline: str = "frozen"
    records: Path | None = None

    def record_path(self, variant: str, seed: int) -> Path | None:
        """The run's record file (``records:``), or None when the grid keeps no records."""
        return None if self.records is None else self.records / variant / f"seed{seed}.json"

    def settings_sha256(self, variant: str, seed: int) -> str:
        """SHA-256 of what defines the run: the base files as parsed (comments and layout do not
        count) and its override flags, less the output folder."""
        bases = [yaml.safe_load(b.read_text()) for b in self.bases]
        text = json.dumps(
            {"bases": bases, "flags": self.settings_flags(variant, seed)}, sort_keys=True, default=str
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def runs(self) -> list[tuple[str, int]]:
        """Seed-major order, so an interrupted ablation has every variant on the first seeds."""
        return [(name, seed) for seed in self.seeds for name in self.variants]

    def run_dir(self, variant: str, seed: int) -> Path:
        return self.out_dir / "runs" / variant / f"seed{seed}"

    def settings_flags(self, variant: str, seed: int) -> list[str]:
        """The run's override flags less its output folder (what a record keeps)."""
        return [f for f in self.flags_for(variant, seed) if not f.startswith("--trainer.default_root_dir=")]

    def flags_for(self, variant: str, seed: int) -> list[str]:
        """The LightningCLI override flags of one run (after the base files)."""
        settings = {**self.overrides, **self.variants[variant]}
        settings |= {"seed_everything": seed, "trainer.default_root_dir": str(self.run_dir(variant, seed))}
        return [override(k, v) for k, v in settings.items()]


DEFAULT_MENU = Path("experiments/ablations/menu.yaml")


def _default_menu(grid: Path) -> Path:
    """``menu.yaml`` next to the grid, else the shipped experiments/ablations/menu.yaml."""
    beside = grid.parent / "menu.yaml"
    return beside if beside.is_file() else DEFAULT_MENU


def load_menu(path: Path) -> dict[str, dict]:
    """The standard rows (``rows:`` of a menu file): name -> dotted-key overrides."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise GridError(f"{path}: cannot read the ablation menu: {err}") from err
    rows = raw.get("rows") if isinstance(raw, dict) else None
    if not isinstance(rows, dict) or not all(isinstance(v, dict) for v in rows.values()):
        raise GridError(f"{path}: expected 'rows:' mapping row names to override mappings")
    return rows


def load_grid(path: str | Path) -> Grid:
    """Parse and validate a grid file; errors name the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise GridError(f"{path}: cannot read ablation grid: {err}") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("ablation"), dict):
        raise GridError(f"{path}: expected a top-level 'ablation:' mapping")
    spec = raw["ablation"]
    unknown = set(spec) - set(FIELDS)
    if unknown:
        raise GridError(f"{path}: ablation: unknown fields {sorted(unknown)}; known: {list(FIELDS)}")
    if "base" not in spec:
        raise GridError(f"{path}: ablation.base is missing (the experiment YAML(s) every run starts from)")
    bases = [Path(b) for b in (spec["base"] if isinstance(spec["base"], list) else [spec["base"]])]
    for base in bases:
        if not base.is_file():
            raise GridError(f"{path}: ablation.base: file not found: {base}")
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise GridError(f"{path}: ablation.seeds must be a non-empty list of integers, got {seeds!r}")
    menu_file = Path(spec["menu_file"]) if "menu_file" in spec else _default_menu(path)
    rows = load_menu(menu_file)
    retrieval_only = bool(spec.get("retrieval_only", False))
    menu = spec.get("menu", list(rows))
    bad = [m for m in menu if m not in rows]
    if bad:
        raise GridError(f"{path}: ablation.menu: unknown entries {bad}; known ({menu_file}): {list(rows)}")
    missing = [r for r in REQUIRED if r not in rows]
    if missing:
        raise GridError(f"{menu_file}: the menu lacks the required rows {missing}")
    names = list(dict.fromkeys([*REQUIRED, *menu]))
    if not retrieval_only and not any(m in names for m in USEFULNESS):
        names.append("end_to_end")
    if not retrieval_only and not any(m.startswith("similarity+") for m in names):
        names.append("similarity+end_to_end")
    variants = {name: rows[name] for name in names}
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
    records = spec.get("records")
    if records is not None and (not isinstance(records, str) or not records.strip()):
        raise GridError(f"{path}: ablation.records must be a folder path, got {records!r}")
    baseline = spec.get("baseline", "frozen" if "frozen" in variants else next(iter(variants)))
    if baseline not in variants:
        raise GridError(
            f"{path}: ablation.baseline: {baseline!r} is not a row of the grid; rows: {list(variants)}"
        )
    return Grid(
        path,
        bases,
        out_dir,
        seeds,
        variants,
        overrides,
        retrieval_only,
        baseline,
        None if records is None else Path(records),
    )


def finished(grid: Grid) -> dict[tuple[str, int], dict]:
    """The metrics of the runs that have finished: a ``metrics.json`` in their folder, else a run
    record (``records:``)."""
    out = {}
    for variant, seed in grid.runs():
        done = grid.run_dir(variant, seed) / "metrics.json"
        if done.exists():
            out[(variant, seed)] = json.loads(done.read_text())
        else:
            record = read_record(grid, variant, seed)
            if record is not None:
                out[(variant, seed)] = record["metrics"]
    return out


QUESTIONS = "questions.jsonl"


def read_questions(path: Path) -> dict[str, dict[str, float]]:
    """A run's ``questions.jsonl``: question id -> metric -> value (numbers; ``top1``, the passage
    ranked first, is a passage id)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            out[str(record.pop("id"))] = record
    return out


def finished_questions(grid: Grid) -> dict[tuple[str, int], dict[str, dict[str, float]]]:
    """The per-question metrics of the finished runs that have them (older runs have none): from
    the run's folder, else its record."""
    out = {}
    for variant, seed in grid.runs():
        run = grid.run_dir(variant, seed)
        if (run / "metrics.json").exists():
            if (run / QUESTIONS).exists():
                out[(variant, seed)] = read_questions(run / QUESTIONS)
            continue
        record = read_record(grid, variant, seed)
        if record is not None and record["questions"]:
            out[(variant, seed)] = {str(q.pop("id")): q for q in record["questions"]}
    return out


def read_record(grid: Grid, variant: str, seed: int) -> dict | None:
    """A run's record (``records:``), None when there is none; GridError naming the file when it
    is not one this version wrote for this run."""
    path = grid.record_path(variant, seed)
    if path is None or not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GridError(f"{path}: cannot read the run record: {err}; delete it to rerun the run") from None
    if not isinstance(record, dict) or not isinstance(record.get("format"), int):
        raise GridError(f"{path}: not a joint-rag run record (no integer 'format' field)")
    if record["format"] > RECORD_FORMAT:
        raise GridError(
            f"{path}: run record format {record['format']} is newer than this joint-rag reads "
            f"({RECORD_FORMAT}); upgrade joint-rag"
        )
    for name, kind in (("variant", str), ("seed", int), ("metrics", dict), ("questions", list)):
        if not isinstance(record.get(name), kind):
            raise GridError(f"{path}: run record field {name!r} is missing or not a {kind.__name__}")
    if (record["variant"], record["seed"]) != (variant, seed):
        raise GridError(
            f"{path}: the record is of {record['variant']} seed {record['seed']}, "
            f"not {variant} seed {seed}: the file was moved; put it back or delete it"
        )
    for n, q in enumerate(record["questions"]):
        if not isinstance(q, dict) or "id" not in q:
            raise GridError(f"{path}: questions[{n}] has no 'id'")
    return record


def write_record(grid: Grid, variant: str, seed: int, metrics: dict, questions: dict | None) -> Path | None:
    """Write the run's record (atomically; nothing when the grid keeps no records)."""
    path = grid.record_path(variant, seed)
    if path is None:
        return None
    rows = [
        {"id": q, **{k: round(v, 6) if isinstance(v, float) else v for k, v in m.items()}}
        for q, m in (questions or {}).items()
    ]
    head = {
        "format": RECORD_FORMAT,
        "grid": str(grid.path),
        "variant": variant,
        "seed": seed,
        "settings_sha256": grid.settings_sha256(variant, seed),
        "flags": grid.settings_flags(variant, seed),
        "machine": machine(),
        "git": git_commit(),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metrics": metrics,
    }
    # one line per question, so the file stays small and diffs by question
    lines = ",\n".join("    " + json.dumps(r, ensure_ascii=False) for r in rows)
    text = json.dumps(head, indent=2, ensure_ascii=False)[:-2]
    text += ',\n  "questions": [' + (f"\n{lines}\n  " if rows else "") + "]\n}\n"
    return atomic_write(path, text)


def backfill_records(grid: Grid) -> list[tuple[str, int]]:
    """Write the missing records of runs whose folders finished (before the grid kept records);
    returns the runs recorded."""
    if grid.records is None:
        return []
    done = []
    for variant, seed in grid.runs():
        run = grid.run_dir(variant, seed)
        path = grid.record_path(variant, seed)
        if (run / "metrics.json").exists() and path is not None and not path.exists():
            questions = read_questions(run / QUESTIONS) if (run / QUESTIONS).exists() else None
            write_record(grid, variant, seed, json.loads((run / "metrics.json").read_text()), questions)
            done.append((variant, seed))
    return done


def stale_records(grid: Grid) -> list[tuple[str, int]]:
    """The recorded runs whose settings hash differs from what the grid defines now."""
    stale = []
    for variant, seed in grid.runs():
        record = read_record(grid, variant, seed)
        if record is not None and record.get("settings_sha256") != grid.settings_sha256(variant, seed):
            stale.append((variant, seed))
    return stale


def _questions_text(records: list[dict], metrics: dict[str, float]) -> str:
    """One JSON line per question. Ids repeated (examples without ids get their batch position)
    are replaced by the question's position in the validation order, the same in every run. A
    metric that is NaN in the run's metrics (diverged weights) is NaN for every question."""
    ids = [str(r["id"]) for r in records]
    unique = len(set(ids)) == len(ids)
    lines = []
    for n, record in enumerate(records):
        values = {
            k: (math.nan if math.isnan(metrics.get(k, 0.0)) else v) for k, v in record.items() if k != "id"
        }
        lines.append(json.dumps({"id": ids[n] if unique else f"#{n}", **values}))
    return "".join(line + "\n" for line in lines)


def run_one(grid: Grid, variant: str, seed: int) -> dict:
    """Fit + validate one run in-process; returns and stores its metrics (resumable).

    ``questions.jsonl`` (per-question metrics of the validation) is written before
    ``metrics.json``, the file that marks the run finished."""
    done = grid.run_dir(variant, seed) / "metrics.json"
    if done.exists():
        return json.loads(done.read_text())
    record = read_record(grid, variant, seed)
    if record is not None:
        return record["metrics"]
    t0 = time.perf_counter()
    cli = build(grid.bases, grid.flags_for(variant, seed))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli.model.question_records = []
    results = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    records, cli.model.question_records = cli.model.question_records, None
    metrics = {k.removeprefix("val/"): float(v) for k, v in results.items() if k.startswith("val/")}
    metrics["wall_seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write(done.parent / QUESTIONS, _questions_text(records, metrics))
    write_json(done, metrics)
    write_record(grid, variant, seed, metrics, read_questions(done.parent / QUESTIONS))
    return metrics
