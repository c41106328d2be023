"""benchmarks/instruction_scaling.py on a grid folder the test writes: row names, per-row means
with intervals, paired differences from n0, the table and the plot."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml

from joint_rag.ablation import backfill_records, load_grid

REPO = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location(
        "instruction_scaling", REPO / "benchmarks" / "instruction_scaling.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(grid: Path, row: str, seed: int, pairs: list[float], ndcg: list[float]) -> None:
    folder = grid / "runs" / row / f"seed{seed}"
    folder.mkdir(parents=True)
    lines = [{"id": f"q{i}", "ndcg@10": v} for i, v in enumerate(ndcg)]
    lines += [{"id": f"pair:{i}", "p_mrr": v, "p_mrr_seen": v} for i, v in enumerate(pairs)]
    (folder / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    metrics = {"ndcg@10": sum(ndcg) / len(ndcg), "p_mrr_seen": sum(pairs) / len(pairs), "wall_seconds": 1.0}
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_summary_means_intervals_and_paired_differences(tmp_path):
    mod = _module()
    assert mod.row_kind("n256") == ("similarity", 256)
    assert mod.row_kind("rl_n16") == ("rl", 16) and mod.row_kind("tiny_n0") == ("tiny", 0)
    assert mod.row_kind("frozen") is None
    assert mod.comparisons("rl_n16") == {"vs_n0": "n0", "vs_similarity": "n16"}
    assert mod.comparisons("tiny_n256") == {"vs_n0": "tiny_n0"} and mod.comparisons("n0") == {}
    assert mod.row_kind("lsr_n256") == ("lsr", 256)
    assert mod.comparisons("lsr_n256") == {"vs_n0": "lsr_n0", "vs_similarity": "n256"}
    assert mod.comparisons("lsr_n0") == {"vs_similarity": "n0"}
    with_rl0 = ("n0", "n16", "rl_n0", "rl_n16")  # a grid that trains Reinforce on ordinary questions too
    assert mod.comparisons("rl_n16", with_rl0) == {"vs_n0": "rl_n0", "vs_similarity": "n16"}
    assert mod.comparisons("rl_n0", with_rl0) == {"vs_similarity": "n0"}
    for seed in (0, 1):
        _run(tmp_path, "n0", seed, [0.0, 0.1, -0.1, 0.2], [1.0, 0.5])
        _run(tmp_path, "n16", seed, [0.3, 0.5, 0.2, 0.6], [1.0, 0.5])  # +0.35 on every seed
    runs = mod.load(tmp_path)
    table = mod.summarise(runs)
    back = mod.paired(runs, "n0", "n16", "p_mrr_seen")  # --pair n0 n16: the other way round
    assert back["delta"] == pytest.approx(-0.35) and back["beyond_noise"] and back["items"] == 4
    seen = table["n16"]["p_mrr_seen"]
    assert seen["mean"] == pytest.approx(0.4) and seen["items"] == 4
    assert seen["interval"][0] <= 0.4 <= seen["interval"][1]
    d = seen["vs_n0"]
    assert d["delta"] == pytest.approx(0.35) and d["beyond_noise"] and d["seeds"] == 2
    same = table["n16"]["ndcg@10"]["vs_n0"]
    assert same["delta"] == pytest.approx(0.0) and not same["beyond_noise"]
    assert "vs_n0" not in table["n0"]["p_mrr_seen"]
    for seed in (0, 1):  # the usefulness signal at N = 16: -0.1 from similarity's p-MRR on every pair
        _run(tmp_path, "lsr_n16", seed, [0.2, 0.4, 0.1, 0.5], [1.0, 0.5])
    table = mod.summarise(mod.load(tmp_path))
    assert table["lsr_n16"]["p_mrr_seen"]["vs_similarity"]["delta"] == pytest.approx(-0.1)
    text = mod.markdown(table)
    assert "| lsr_n16 | 16 | -0.100 [" in text
    assert "| n16 | 2 | " in text and "0.400 [" in text and "Δ +0.350" in text
    mod.plot(table, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_a_grid_file_loads_its_run_records(tmp_path, monkeypatch):
    """--grid GRID.yaml: the runs come from the grid's run records when its folders are gone."""
    mod = _module()
    monkeypatch.chdir(REPO)
    out, records = tmp_path / "out", tmp_path / "records"
    grid = tmp_path / "grid.yaml"
    spec = {"base": "experiments/smoke.yaml", "out_dir": str(out), "records": str(records), "seeds": [0, 1]}
    spec |= {"menu": ["frozen", "similarity"], "retrieval_only": True, "variants": {"n0": {}, "n16": {}}}
    grid.write_text(yaml.safe_dump({"ablation": spec}))
    for seed in (0, 1):
        _run(out, "n0", seed, [0.0, 0.1, -0.1, 0.2], [1.0, 0.5])
        _run(out, "n16", seed, [0.3, 0.5, 0.2, 0.6], [1.0, 0.5])
    assert len(backfill_records(load_grid(grid))) == 4
    shutil.rmtree(out)  # a fresh clone: records only
    table = mod.summarise(mod.load(grid))
    assert table["n16"]["p_mrr_seen"]["vs_n0"]["delta"] == pytest.approx(0.35)
    assert table["n16"]["p_mrr_seen"]["vs_n0"]["seeds"] == 2
