"""`jrag fit -c experiments/smoke.yaml` runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_jrag(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", JRAG_PROGRESS="0", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(
        [sys.executable, "-m", "joint_rag.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_smoke_fit_end_to_end(tmp_path):
    out = tmp_path / "run"
    res = run_jrag(
        [
            "fit",
            "-c",
            "experiments/smoke.yaml",
            f"--trainer.default_root_dir={out}",
            "--trainer.logger=false",
        ],
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "max_steps=6" in res.stderr + res.stdout
    ckpts = list(out.rglob("*.ckpt"))
    assert ckpts, "fit should write a checkpoint"


def test_smoke_validate_reports_metrics(tmp_path):
    res = run_jrag(
        ["validate", "-c", "experiments/smoke.yaml", f"--trainer.default_root_dir={tmp_path}"], tmp_path
    )
    assert res.returncode == 0, res.stderr[-3000:]
    text = res.stdout + res.stderr
    for key in ("val/recall@1", "val/recall@5", "val/mrr@10", "val/em", "val/f1"):
        assert key in text
