"""Helper for tests that need a trained checkpoint: two steps of experiments/smoke.yaml."""

from __future__ import annotations

from pathlib import Path

from joint_rag.cli import make_cli

REPO = Path(__file__).resolve().parents[1]


def fit_smoke(root: Path):
    """Two training steps of experiments/smoke.yaml in-process; returns the CLI (model, ckpt)."""
    cli = make_cli(
        [
            "fit",
            "-c",
            str(REPO / "experiments" / "smoke.yaml"),
            f"--trainer.default_root_dir={root}",
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--trainer.limit_val_batches=1",
            "--data.source.init_args.num_entities=12",
        ]
    )
    ckpts = sorted(root.rglob("*.ckpt"))
    assert ckpts, "fit should write a checkpoint"
    return cli, ckpts[-1]
