"""``jrag quickstart -c experiments/quickstart.yaml``: the main job.

Evaluates held-out questions before training (step 0), trains (compressor pretraining, then
joint end-to-end training through the index), evaluates again, prints one before/after
table, writes ``metrics.json`` next to the run, and exports the trained system.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from joint_rag.cli import extra_command

KEYS = ("recall@1", "recall@5", "em", "f1")


def _pick(results: dict) -> dict[str, float]:
    return {k: round(float(results[f"val/{k}"]), 4) for k in KEYS if f"val/{k}" in results}


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def print_table(metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"joint-rag quickstart (wall time {metrics['wall_seconds']:.0f} s)")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for key in KEYS:
        b, a = metrics["before"].get(key), metrics["after"].get(key)
        table.add_row(key, "-" if b is None else f"{b:.3f}", "-" if a is None else f"{a:.3f}")
    Console().print(table)


@extra_command("quickstart")
def quickstart(argv: list[str]) -> int:
    """Evaluate, train, evaluate, export. Extra arguments are passed to the config parser."""
    t0 = time.perf_counter()
    parser = argparse.ArgumentParser(prog="jrag quickstart", description=__doc__)
    parser.add_argument("-c", "--config", required=True, help="experiment YAML (LightningCLI format)")
    parser.add_argument("--no-export", action="store_true", help="skip the export step")
    args, rest = parser.parse_known_args(argv)
    if not Path(args.config).is_file():
        parser.error(f"config file not found: {args.config}")

    from joint_rag.cli import make_cli

    cli = make_cli(["-c", args.config, *rest], run=False)
    model, dm, trainer = cli.model, cli.datamodule, cli.trainer
    run_dir = Path(trainer.default_root_dir)
    before = _pick(trainer.validate(model, datamodule=dm, verbose=False)[0])
    trainer.fit(model, datamodule=dm)
    after = _pick(trainer.validate(model, datamodule=dm, verbose=False)[0])
    metrics = {
        "before": before,
        "after": after,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "train_steps": int(trainer.global_step),
        "eval_questions": len(dm.data.val),
        "corpus_passages": len(dm.corpus),
        "config": str(args.config),
        "overrides": rest,
    }
    if not args.no_export:
        from joint_rag.export import export_module

        export_dir = run_dir / "export"
        export_module(model, export_dir, dm.corpus, config=args.config, metrics=metrics, overwrite=True)
        metrics["export_dir"] = str(export_dir)
        metrics["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(run_dir / "metrics.json", metrics)
    print_table(metrics)
    print(
        f"metrics: {run_dir / 'metrics.json'}"
        + (f"   export: {metrics['export_dir']}" if "export_dir" in metrics else "")
    )
    return 0
