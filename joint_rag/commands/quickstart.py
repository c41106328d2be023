"""``jrag quickstart -c experiments/quickstart.yaml [LightningCLI overrides]``: the main job.

Evaluates held-out questions before training (step 0), trains (compressor pretraining, then
joint end-to-end training through the index), evaluates again, prints one before/after table,
writes ``metrics.json`` next to the run, and exports the trained system.
"""

from __future__ import annotations

import time
from pathlib import Path

from joint_rag.commands.args import Parser, fail

PROG = "jrag quickstart"
KEYS = ("recall@1", "recall@5", "em", "f1")


def _pick(results: dict) -> dict[str, float]:
    return {k: round(float(results[f"val/{k}"]), 4) for k in KEYS if f"val/{k}" in results}


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


def main(argv: list[str]) -> int:
    """Evaluate, train, evaluate, export. Extra arguments are LightningCLI overrides."""
    t0 = time.perf_counter()
    parser = Parser(prog=PROG, description=__doc__)
    parser.add_argument(
        "-c",
        "--config",
        required=True,
        action="append",
        help="experiment YAML (repeatable, applied in order)",
    )
    parser.add_argument("--no-export", action="store_true", help="skip the export step")
    args, rest = parser.parse_known_args(argv)
    for cfg in args.config:
        if not Path(cfg).is_file():
            fail(PROG, f"config file not found: {cfg}")

    from joint_rag.atomic import write_json
    from joint_rag.config import build, effective_config

    cli = build(args.config, rest)
    model, dm, trainer = cli.model, cli.datamodule, cli.trainer
    before = _pick(trainer.validate(model, datamodule=dm, verbose=False)[0])
    trainer.fit(model, datamodule=dm)
    after = _pick(trainer.validate(model, datamodule=dm, verbose=False)[0])
    run_dir = Path(trainer.log_dir or trainer.default_root_dir)
    metrics = {
        "before": before,
        "after": after,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "train_steps": int(trainer.global_step),
        "eval_questions": len(dm.data.val),
        "corpus_passages": len(dm.corpus),
        "config": [str(c) for c in args.config],
        "overrides": rest,
        "run_dir": str(run_dir),
    }
    if not args.no_export:
        from joint_rag.atomic import terminate_as_interrupt
        from joint_rag.export import export_module

        export_dir = Path(trainer.default_root_dir) / "export"
        config = args.config[0] if len(args.config) == 1 and not rest else effective_config(cli)
        with terminate_as_interrupt("jrag quickstart"):  # SIGTERM removes the partial export
            export_module(model, export_dir, dm.corpus, config=config, metrics=metrics, overwrite=True)
        metrics["export_dir"] = str(export_dir)
        metrics["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write_json(Path(trainer.default_root_dir) / "metrics.json", metrics)
    print_table(metrics)
    print(
        f"run folder: {run_dir}   metrics: {Path(trainer.default_root_dir) / 'metrics.json'}"
        + (f"   export: {metrics['export_dir']}" if "export_dir" in metrics else "")
    )
    return 0
