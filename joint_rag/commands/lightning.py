"""``jrag fit|validate|test``: LightningCLI subcommands (``joint_rag.config``)."""

from __future__ import annotations

from joint_rag.config import make_cli


def fit(argv: list[str]) -> int:
    """Train from experiment YAML(s): ``-c BASE.yaml [-c DELTA.yaml] [--key=value ...]``."""
    make_cli(["fit", *argv])
    return 0


def validate(argv: list[str]) -> int:
    """Evaluate a config (or ``--ckpt_path``) on the validation split."""
    make_cli(["validate", *argv])
    return 0


def test(argv: list[str]) -> int:
    """Evaluate a config (or ``--ckpt_path``) on the test split."""
    make_cli(["test", *argv])
    return 0
