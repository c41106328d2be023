"""Distributed runs on 2 CPU processes (gloo): the sharded index searches exactly like one
process, a 2-rank fit trains, and validation on a set that 2 does not divide reports the metrics
of one process. Select them with ``pytest -k ddp`` (the odd-size validation is ``slow``: add
``-m slow``)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from joint_rag.retrieval.index import PassageIndex
from joint_rag.retrieval.sharded import ShardedIndex, shard_range

REPO = Path(__file__).resolve().parents[1]
N, R, D = 61, 2, 8  # 61: shards of 30 and 31
QUERIES = {0: [3, 0], 1: [5, 2]}  # per rank, per call: a rank may search with no queries at all


def _data():
    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(N, R, D, generator=g)
    queries = {r: [torch.randn(b, R, D, generator=g) for b in bs] for r, bs in QUERIES.items()}
    return vectors, queries, [f"p{i}" for i in range(N)]


def _worker(rank: int, world: int, init: str, out: str, backend: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        vectors, queries, ids = _data()
        owned = shard_range(N, rank, world)
        local = PassageIndex(
            vectors[owned.start : owned.stop], ids[owned.start : owned.stop], "flat_cosine", backend
        )
        index = ShardedIndex(local, owned, ids)
        results = []
        for q in queries[rank]:
            for k in (1, 7, 40):  # 40 > a shard's 30 rows
                scores, rows = index.search(q, k)
                results.append({"k": k, "scores": scores.tolist(), "rows": rows.tolist()})
        Path(out, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_ddp_sharded_search_equals_one_process(tmp_path: Path, backend: str) -> None:
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_worker, args=(2, init, str(tmp_path), backend), nprocs=2, join=True)
    vectors, queries, ids = _data()
    whole = PassageIndex(vectors, ids, "flat_cosine", "exact")
    for rank in (0, 1):
        got = iter(json.loads((tmp_path / f"rank{rank}.json").read_text()))
        for q in queries[rank]:
            for k in (1, 7, 40):
                want_scores, want_rows = (
                    whole.search(q, k) if len(q) else (torch.zeros(0, k), torch.zeros(0, k))
                )
                res = next(got)
                assert res["rows"] == want_rows.long().tolist(), (rank, k)
                assert torch.allclose(torch.tensor(res["scores"]).reshape(-1, k), want_scores, atol=1e-5)


def test_ddp_more_ranks_than_passages_is_one_line() -> None:
    with pytest.raises(ValueError, match="3 passages but there are 4 ranks"):
        shard_range(3, 0, 4)


def _jrag(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "JRAG_TRACEBACK": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "joint_rag.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)


def _smoke(root: Path, *extra: str) -> list[str]:
    return [
        "-c",
        str(REPO / "experiments" / "smoke.yaml"),
        f"--trainer.default_root_dir={root}",
        "--data.source.init_args.num_entities=12",
        *extra,
    ]


def _metrics(root: Path) -> dict[str, float]:
    rows = list(csv.DictReader(next(root.rglob("metrics.csv")).open()))
    return {
        k: float(v) for row in rows for k, v in row.items() if v not in ("", None) and k.startswith("val/")
    }


def test_ddp_two_rank_fit_runs_a_few_steps(tmp_path: Path) -> None:
    """Two CPU ranks (gloo) train 3 steps with a sharded index and a rolling refresh."""
    args = _smoke(
        tmp_path,
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.max_steps=3",
        "--trainer.val_check_interval=3",
        "--trainer.callbacks.init_args.mode=rolling",
    )
    done = _jrag("fit", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = _metrics(tmp_path)
    assert metrics["val/questions"] > 0 and "val/recall@1" in metrics
    assert list(tmp_path.rglob("last.ckpt"))


@pytest.mark.slow  # two MiniLM validations in subprocesses, ~35-60 s: run with -m slow
def test_ddp_validation_on_an_odd_size_matches_one_process(tmp_path: Path) -> None:
    """9 questions over 2 ranks: each is evaluated once (a DistributedSampler pads to 10 with a
    duplicate), so the metrics equal those of one process. MiniLM as the encoder: an untrained
    tiny encoder scores passages within 1e-7 of each other, and such ties flip with the batch."""
    common = (
        "--data.max_eval_examples=9",
        "--data.eval_batch_size=2",
        "--trainer.limit_val_batches=1.0",
        "--data.source.init_args.num_entities=40",
        "--model.compressor.init_args.backbone=minilm",
        "--model.eval_generate=false",
    )
    one = _jrag("validate", *_smoke(tmp_path / "one", *common), cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _jrag(
        "validate",
        *_smoke(tmp_path / "two", *common, "--trainer.devices=2", "--trainer.strategy=ddp"),
        cwd=tmp_path,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    m1, m2 = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert m1["val/questions"] == m2["val/questions"] == 9
    for key in ("val/recall@1", "val/recall@5", "val/mrr@10", "val/ndcg@10"):
        assert m1[key] == pytest.approx(m2[key], abs=1e-6), key
