"""benchmarks/limit_training.py's paired comparison on run folders the test writes: each row's
per-query LIMIT-small values against a base row's, over the seeds both ran."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("limit_training", REPO / "benchmarks" / "limit_training.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(root: Path, row: str, seed: int, recall2: list[float]) -> dict:
    folder = root / row / f"seed{seed}"
    folder.mkdir(parents=True)
    lines = [
        {"query_id": f"q{i}", "recall@2": v, "recall@10": 1.0, "recall@20": 1.0}
        for i, v in enumerate(recall2)
    ]
    (folder / "limit_per_query.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return {"row": row, "seed": seed}


def test_paired_difference_over_shared_seeds_and_queries(tmp_path):
    mod = _module()
    n = 200
    runs = [
        _run(tmp_path, "single", 0, [0.0] * n),
        _run(tmp_path, "single", 1, [0.5] * n),
        _run(tmp_path, "slots", 0, [0.5] * n),  # +0.5 on seed 0
        _run(tmp_path, "slots", 1, [0.5] * (n // 2) + [1.0] * (n // 2)),  # +0.25 on seed 1
        _run(tmp_path, "slots", 2, [1.0] * n),  # no base run for seed 2: not paired
        _run(tmp_path, "same", 0, [0.0] * n),
    ]
    diffs = mod.paired(tmp_path, runs, "single")
    assert set(diffs) == {"slots", "same"}
    d = diffs["slots"]["recall@2"]
    assert d["seeds"] == [0, 1] and d["queries"] == n
    assert d["delta"] == pytest.approx(0.375)
    assert d["beyond_noise"] and d["ci95"][0] > 0
    same = diffs["same"]["recall@2"]
    assert same["delta"] == 0 and not same["beyond_noise"]
    assert diffs["slots"]["recall@10"]["delta"] == 0
    table = mod.paired_table(diffs, "single")
    assert "| slots | 2 | +0.375" in table and "*" in table.splitlines()[2]


def test_paired_needs_the_base_row(tmp_path):
    mod = _module()
    runs = [_run(tmp_path, "slots", 0, [1.0])]
    with pytest.raises(SystemExit, match="--paired single: no finished run"):
        mod.paired(tmp_path, runs, "single")
