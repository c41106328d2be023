"""Helpers for tests that need a trained checkpoint (two steps of experiments/smoke.yaml) or a tiny export."""

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


def tiny_export(folder: Path, seed: int = 0) -> Path:
    """An untrained tiny system over a 12-person knowledge base, exported to ``folder``
    (``seed`` sets its weights; the shapes are always the same)."""
    import torch

    from joint_rag.data.synthetic import SyntheticSource
    from joint_rag.export import export_module
    from joint_rag.models import Compressor, Generator, TopKSelector
    from joint_rag.training import JointRAGModule

    torch.manual_seed(seed)
    data = SyntheticSource(num_entities=12, seed=0).load()
    module = JointRAGModule(
        Compressor("tiny-bert", num_memory_tokens=2, max_length=48),
        Generator("tiny-llama", max_new_tokens=3),
        selector=TopKSelector(k=2),
        num_candidates=4,
    )
    return export_module(module, folder, data.corpus)
