"""The ablation runner: grid parsing, resumability, tables and plot."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from joint_rag.studies import GridError, load_grid, main_ablate

REPO = Path(__file__).resolve().parents[1]


def test_smoke_ablation_runs_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    grid_file = tmp_path / "grid.yaml"
    spec = yaml.safe_load((REPO / "experiments/ablations/smoke.yaml").read_text())
    spec["ablation"]["out_dir"] = str(tmp_path / "out")
    grid_file.write_text(yaml.safe_dump(spec))
    assert main_ablate(["-c", str(grid_file)]) == 0
    out = tmp_path / "out"
    for name in ("results.md", "results.csv", "results.png"):
        assert (out / name).stat().st_size > 0
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    variants = {r["variant"] for r in rows}
    assert {
        "frozen",
        "similarity",
        "end_to_end",
        "similarity+end_to_end",
        "pdist",
        "emdr2",
        "lsr",
    } <= variants
    assert {r["seed"] for r in rows} >= {"0", "1", "mean", "std"}
    md = (out / "results.md").read_text()
    assert "| frozen |" in md and "recall@5" in md
    # resumable: finished runs are skipped (their metrics files are not rewritten)
    stamp = (out / "runs/frozen/seed0/metrics.json").stat().st_mtime_ns
    assert main_ablate(["-c", str(grid_file)]) == 0
    assert (out / "runs/frozen/seed0/metrics.json").stat().st_mtime_ns == stamp
    # --report-only runs nothing and reports the finished runs
    (out / "results.md").unlink()
    (out / "runs/lsr/seed1/metrics.json").unlink()
    assert main_ablate(["-c", str(grid_file), "--report-only"]) == 0
    assert not (out / "runs/lsr/seed1/metrics.json").exists()
    with open(out / "results.csv") as fh:
        lsr = [r for r in csv.DictReader(fh) if r["variant"] == "lsr"]
    assert {r["seed"] for r in lsr} == {"0", "mean", "std"}


def test_grid_errors_name_the_field(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text("ablation:\n  base: experiments/smoke.yaml\n  seeds: one\n")
    with pytest.raises(GridError, match="ablation.seeds"):
        load_grid(bad)
    bad.write_text("ablation:\n  base: nowhere.yaml\n")
    with pytest.raises(GridError, match="ablation.base: file not found"):
        load_grid(bad)
    bad.write_text("ablation:\n  base: experiments/smoke.yaml\n  menu: [nope]\n")
    with pytest.raises(GridError, match="unknown entries"):
        load_grid(bad)


def test_baselines_always_included(monkeypatch):
    monkeypatch.chdir(REPO)
    grid = load_grid(REPO / "experiments/ablations/smoke.yaml")
    assert {"frozen", "similarity", "similarity+end_to_end"} <= set(grid.variants)
