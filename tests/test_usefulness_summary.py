"""benchmarks/usefulness_summary.py on run records the test writes: per-seed values, labels,
paired intervals against several baselines, the markdown table and the plot."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from joint_rag.ablation import load_grid, write_record

REPO = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location(
        "usefulness_summary", REPO / "benchmarks" / "usefulness_summary.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_table_from_records(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    grid_file = tmp_path / "grid.yaml"
    spec = {
        "base": "experiments/smoke.yaml",
        "out_dir": str(tmp_path / "out"),
        "records": str(tmp_path / "rec"),
    }
    spec |= {"seeds": [0, 1], "menu": ["frozen", "similarity"], "retrieval_only": True, "frozen": "untrained"}
    spec["variants"] = {"lsr": {"model.relevance_labels": False}}
    grid_file.write_text(yaml.safe_dump({"ablation": spec}))
    grid = load_grid(grid_file)
    hits = {"frozen": [0, 0, 0, 0], "similarity": [1, 1, 1, 0], "lsr": [1, 0, 1, 0]}
    for row, values in hits.items():
        for seed in (0, 1):
            questions = {f"q{i}": {"recall@1": float(v), "mrr@10": float(v)} for i, v in enumerate(values)}
            metrics = {"recall@1": sum(values) / 4, "mrr@10": sum(values) / 4, "wall_seconds": 1.0}
            write_record(grid, row, seed, metrics, questions)
    mod = _module()
    out = tmp_path / "summary.json"
    plot = tmp_path / "s.png"
    args = ["--grid", str(grid_file), "--baselines", "frozen", "lsr", "--out", str(out), "--plot", str(plot)]
    assert mod.main(args) == 0
    summary = mod.build(str(grid_file), ["frozen", "lsr"])
    rows = summary["rows"]
    assert [rows[r]["labels"] for r in ("frozen", "similarity", "lsr")] == ["-", "gold", "none"]
    assert rows["similarity"]["recall@1"] == [0.75, 0.75] and rows["similarity"]["mean"] == 0.75
    d = rows["similarity"]["vs"]["lsr"]
    assert d["delta"] == pytest.approx(0.25) and d["seeds"] == [0, 1] and d["questions"] == 4
    assert rows["lsr"]["vs"]["frozen"]["delta"] == pytest.approx(0.5)
    assert "lsr" not in rows["lsr"]["vs"]
    text = mod.markdown(summary)
    assert "| similarity | gold | 2 | 0.750, 0.750 | 0.750 ± 0.000 |" in text
    assert plot.stat().st_size > 0 and out.stat().st_size > 0
    only = mod.build(str(grid_file), ["frozen"], seeds=[1])
    assert only["seeds"] == [1]  # the selection asked for, not a row's seeds
    only = only["rows"]
    assert only["similarity"]["seeds"] == [1] and only["similarity"]["vs"]["frozen"]["seeds"] == [1]
