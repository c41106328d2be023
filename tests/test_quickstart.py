"""The main job's pipeline (evaluate -> train -> evaluate -> export) on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from joint_rag.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_pipeline_on_tiny_models(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    run = tmp_path / "qs"
    assert main(["quickstart", "-c", "experiments/smoke.yaml", f"--trainer.default_root_dir={run}"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("before", "after"):
        assert set(metrics[split]) == {"recall@1", "recall@5", "em", "f1"}
        assert all(0.0 <= v <= 1.0 for v in metrics[split].values())
    assert metrics["wall_seconds"] > 0 and metrics["train_steps"] == 6
    assert "before" in capsys.readouterr().out

    from joint_rag import JointRAG

    rag = JointRAG.from_pretrained(run / "export")
    hits = rag.retrieve(["Where was somebody born?"], k=3)
    assert len(hits) == 1 and len(hits[0]) == 3
    card = (run / "export" / "README.md").read_text()
    assert "recall@5" in card


def test_quickstart_missing_config_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        main(["quickstart", "-c", "experiments/does-not-exist.yaml"])
    assert "config file not found: experiments/does-not-exist.yaml" in capsys.readouterr().err
