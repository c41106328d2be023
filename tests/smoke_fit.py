"""Helper for tests that need a trained checkpoint: two steps of experiments/smoke.yaml."""

from __future__ import annotations

from pathlib import Path

from joint_rag.config import make_cli

REPO = Path(__file__).resolve().parents[1]


def fit_smoke(root: Path, *overrides: str):
    """Two training steps of experiments/smoke.yaml in-process (plus LightningCLI ``overrides``);
    returns the CLI (model, ...) and the last checkpoint."""
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
            *overrides,
        ]
    )
    last = sorted(root.rglob("last.ckpt"))
    assert last, "fit should write a last.ckpt"
    return cli, last[-1]
