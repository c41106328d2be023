"""The two-pass binned-max search (``algo="binmax"``, kernels/binmax.py) in the CPU interpreter
(compiled on CUDA): pass-1 bin maxima against torch, exactness on odd shapes, ties, an adversarial
layout that puts the top-k in few bins, query chunking, and the config's bin width."""

import os

import torch

if not torch.cuda.is_available():  # must precede `import triton` (see test_similarity_topk.py)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from test_similarity_topk import SHAPES, check_topk, needs_triton  # noqa: E402
from topk_inputs import DEVICE, make_inputs  # noqa: E402

from joint_rag.kernels import binmax, configs, launcher, similarity, similarity_topk_torch  # noqa: E402
from joint_rag.kernels.launcher import choose_config, similarity_topk_triton  # noqa: E402

BIN_SIMS = ("dot", "cosine", "flat_cosine")


def _dense_bin_maxima(q, p, sim, cfg):
    """(B, NB) max of the dense scores over each bin's members (torch twin of pass 1)."""
    N = p.shape[0]
    nb = binmax.binmax_layout(N, cfg)[2]
    members = binmax.bin_members(torch.arange(nb, device=q.device), N, cfg)  # (NB, W)
    dense = similarity(q.float(), p.float(), sim)  # (B, N)
    padded = torch.cat([dense, dense.new_full((dense.shape[0], 1), float("-inf"))], dim=1)
    return padded[:, members.clamp(max=N)].amax(dim=2)  # (B, NB)


@needs_triton
@pytest.mark.parametrize("sim", BIN_SIMS)
def test_pass_one_writes_each_bins_maximum(sim):
    q, p = make_inputs(sim, B=18, N=150, D=40 if sim != "flat_cosine" else 20)
    cfg = choose_config(sim, 18, 10, torch.float32, N=150, algo="binmax")
    assert cfg.bins and binmax.binmax_layout(150, cfg)[1] > cfg.block_n // cfg.bins, "bins should cross tiles"
    qq, pp, scales = launcher._prepare(q, p, sim)
    for splits in (1, 3):
        got = binmax.bin_maxima(launcher.kernels_module(), qq, pp, scales, cfg, splits)
        torch.testing.assert_close(got, _dense_bin_maxima(q, p, sim, cfg), atol=1e-5, rtol=0)


@needs_triton
@pytest.mark.parametrize(
    "sim, dtype",
    [(s, torch.float32) for s in BIN_SIMS] + [("dot", torch.float16)],
    ids=lambda x: str(x).replace("torch.", ""),
)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}-N{s[1]}-k{s[2]}")
def test_binmax_matches_reference(sim, dtype, shape):
    B, N, k = shape
    q, p = make_inputs(sim, B, N, D=40 if sim != "flat_cosine" else 20, dtype=dtype)
    scores, indices = similarity_topk_triton(q, p, k, sim, algo="binmax")
    check_topk(q, p, k, sim, scores, indices, tol=1e-5, exact_recall=True)
    assert launcher.last_fallback_rows == 0  # tie-free inputs: no query recomputed


@needs_triton
def test_binmax_splits_and_d_tail_do_not_change_result():
    q, p = make_inputs("cosine", B=20, N=300, D=45)  # D not a multiple of BLOCK_D, N of the span
    one = similarity_topk_triton(q, p, 12, "cosine", algo="binmax", num_splits=1)
    many = similarity_topk_triton(q, p, 12, "cosine", algo="binmax", num_splits=7)
    assert torch.equal(one[1], many[1])
    torch.testing.assert_close(one[0], many[0])
    check_topk(q, p, 12, "cosine", *one, tol=1e-5, exact_recall=True)


@needs_triton
def test_top_k_crowded_into_few_bins_stays_exact():
    """The best 8 passages are the 8 members of one bin and the next 2 sit in a second bin: the
    other selected bins hold nothing of the top-10, yet every top-10 passage is rescored."""
    q, p = make_inputs("dot", B=1, N=256, D=16)
    p = p * 0.01
    cfg = choose_config("dot", 1, 10, torch.float32, N=256, algo="binmax")
    crowded = binmax.bin_members(torch.tensor([5, 6]), 256, cfg).flatten()[:10]  # bin 5 whole, 2 of bin 6
    p[crowded] += q[0] * torch.linspace(3.0, 2.0, 10, device=DEVICE)[:, None]
    scores, indices = similarity_topk_triton(q, p, 10, algo="binmax")
    assert indices[0].tolist() == crowded.tolist()
    check_topk(q, p, 10, "dot", scores, indices, tol=1e-5, exact_recall=True)


@needs_triton
@pytest.mark.parametrize("sim", ["dot", "cosine"])
def test_ties_at_tau_fall_back_and_prefer_the_smaller_index(sim):
    """Every passage five times (copies 20 apart): bin maxima tie at the selection threshold, the
    tied queries are rescored over every bin >= tau, and of equal scores the smaller index wins:
    a copy is returned only if every earlier copy of the same passage is."""
    q, p = make_inputs(sim, B=4, N=20, D=16)
    p = p.repeat(5, 1)  # (100, D)
    scores, indices = similarity_topk_triton(q, p, 9, sim, algo="binmax")
    assert launcher.last_fallback_rows > 0, "duplicated passages should tie at tau"
    check_topk(q, p, 9, sim, scores, indices, tol=1e-5, exact_recall=False)
    torch.testing.assert_close(scores, similarity_topk_torch(q, p, 9, sim)[0])
    for row in indices.tolist():
        assert all(i - 20 in row for i in row if i >= 20), f"a later copy won over an earlier one: {row}"


@needs_triton
def test_query_chunks_when_bin_maxima_exceed_the_cap(monkeypatch):
    q, p = make_inputs("dot", B=40, N=200, D=24)
    want = similarity_topk_triton(q, p, 7, algo="binmax")
    assert binmax.last_chunks == 1
    cfg = choose_config("dot", 40, 7, torch.float32, N=200, algo="binmax")
    nb = binmax.binmax_layout(200, cfg)[2]
    monkeypatch.setattr(binmax, "BINMAX_CAP_BYTES", 16 * nb * 4)  # 16 queries' bin maxima
    got = similarity_topk_triton(q, p, 7, algo="binmax")
    assert binmax.last_chunks == 3
    assert torch.equal(got[1], want[1])
    torch.testing.assert_close(got[0], want[0])


@needs_triton
def test_binmax_empty_batch():
    q, p = make_inputs("dot", B=0, N=50, D=8)
    scores, indices = similarity_topk_triton(q, p, 3, algo="binmax")
    assert scores.shape == indices.shape == (0, 3) and indices.dtype == torch.int64


def test_binmax_refuses_maxsim():
    with pytest.raises(ValueError, match="binmax.*maxsim"):
        choose_config("maxsim", 4, 5, torch.float32, 2, 2, algo="binmax")


def test_binmax_config_at_benchmark_shapes(monkeypatch):
    """The GPU table: 128-query blocks at every k (no running top-k in registers), 16 bins per span,
    bin width from the traffic model (8 passages at k = 100, 32 at k = 10; N = 1e6, D = 768, bf16)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for k, width in ((100, 8), (10, 32)):
        cfg = choose_config("cosine", 512, k, torch.bfloat16, N=1_000_000, D=768, algo="binmax")
        assert (cfg.block_b, cfg.block_n, cfg.bins, cfg.num_warps, cfg.num_stages) == (128, 128, 16, 8, 3)
        assert binmax.binmax_layout(1_000_000, cfg)[1] == width
    small = choose_config("dot", 1, 10, torch.float32, N=1_000_000, D=768, algo="binmax")
    assert (small.block_b, small.num_warps, small.block_d) == (16, 4, 32)
    assert configs.binmax_span_tiles(1000, 1000, 4096, 2, 128) == 1  # never below one tile


@pytest.mark.slow
def test_binmax_probe_dry_run(tmp_path):
    """benchmarks/binmax_probe.py end to end in the interpreter (fresh process, about 25 s)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cmd = [
        sys.executable,
        str(root / "benchmarks" / "binmax_probe.py"),
        "--dry-run",
        "--out-dir",
        str(tmp_path),
    ]
    r = subprocess.run(
        cmd, env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = json.loads((tmp_path / "binmax_probe_dry_run.json").read_text())["rows"]
    assert rows and all("error" not in row and row["recall"] == 1.0 for row in rows)
