"""benchmarks/usefulness_errors.py: what a row ranks first, by category, with intervals."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "usefulness_errors.py"


@pytest.fixture(scope="module")
def errors():
    spec = importlib.util.spec_from_file_location("usefulness_errors", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_categories(errors):
    q = "person-3-q1"
    assert errors.category(q, {"top1": "person-3", "recall@1": 1.0}) == "gold"
    assert errors.category(q, {"top1": "org-1", "recall@1": 0.5}) == "gold"  # a two-hop gold
    assert errors.category(q, {"top1": "distractor-person-3-q1-0", "recall@1": 0.0}) == "own_distractor"
    assert errors.category(q, {"top1": "decoy-person-3-q1-1", "recall@1": 0.0}) == "own_decoy"
    # another question of the same person is not this question's
    assert errors.category(q, {"top1": "decoy-person-3-q10-0", "recall@1": 0.0}) == "other_decoy"
    assert errors.category(q, {"top1": "distractor-person-9-q2-1", "recall@1": 0.0}) == "other_distractor"
    assert errors.category(q, {"top1": "person-4", "recall@1": 0.0}) == "other"


def test_summary_fractions_sum_to_one_and_skip_runs_without_top1(errors):
    records = {
        f"person-{i}-q0": {
            "top1": f"person-{i}" if i % 2 else f"distractor-person-{i}-q0-0",
            "recall@1": float(i % 2),
        }
        for i in range(10)
    }
    old = {q: {"recall@1": r["recall@1"]} for q, r in records.items()}  # recorded before top1
    summary = errors.summarise(
        {("lsr", 0): records, ("lsr", 1): records, ("lsr", 2): old, ("frozen", 0): old}
    )
    assert list(summary) == ["lsr"] and summary["lsr"]["seeds"] == [0, 1]
    assert summary["lsr"]["questions"] == 10
    assert summary["lsr"]["gold"]["mean"] == pytest.approx(0.5)
    assert summary["lsr"]["own_distractor"]["mean"] == pytest.approx(0.5)
    assert sum(summary["lsr"][c]["mean"] for c in errors.CATEGORIES) == pytest.approx(1.0)
    low, high = summary["lsr"]["gold"]["low"], summary["lsr"]["gold"]["high"]
    assert low < 0.5 < high
    assert "| lsr | 0,1 | 10 |" in errors.table(summary)
