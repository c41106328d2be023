"""Compiled Triton kernels on a CUDA GPU (``-m gpu``; skipped without CUDA).

``benchmarks/gpu_check.sh`` runs this file on the GPU machine before the benchmark sweep. The
CPU-interpreter tests of the same kernels are in ``test_similarity_topk.py``.
"""

import pytest
import torch
from topk_inputs import make_inputs

from joint_rag.kernels import (
    dispatch,
    launcher,
    similarity_topk,
    similarity_topk_torch,
    similarity_topk_triton,
)
from joint_rag.kernels.launcher import candidate_configs, choose_config

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# ---- compiled kernels (CUDA) ---------------------------------------------------------------------
# Every call pins one config per kernel variant, so each variant compiles once (B, N and the split
# count are not specialised; D and the strides are multiples of 16 everywhere). Compilations:
# 7 pinned lazy (dot bf16/fp16/fp32, cosine bf16/fp32 (flat_cosine shares them), maxsim bf16/fp32)
# + 2 merge + 3 table configs + 1 autotune variant + 1 sort row top-k = 14 (about 1-5 s each).

KERNEL_VARIANTS = [
    ("dot", torch.bfloat16),
    ("dot", torch.float16),
    ("dot", torch.float32),
    ("cosine", torch.bfloat16),
    ("cosine", torch.float32),
    ("maxsim", torch.bfloat16),
    ("maxsim", torch.float32),
]


def gpu_inputs(sim, B, N, dtype, seed=0):
    """GPU inputs; D (and M*D for flat_cosine) = 256 for single-vector, D = 64 multi-vector."""
    return make_inputs(
        sim, B, N, D=256 if sim in ("dot", "cosine") else 64, m=4, mp=8, dtype=dtype, seed=seed
    )


def pinned_lazy(sim, dtype):
    """The table's k = 100 config at B = 512 (a narrow width at 128 queries for dot/cosine)."""
    return choose_config(sim, 512, 100, dtype, 4, 8, N=1_000_000)


def check_gpu(q, p, k, sim, scores, indices, dtype):
    """Against the torch path (fp32 accumulation too; only the summation order differs)."""
    ref_s, ref_i = similarity_topk_torch(q, p, k, sim)
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    scale = ref_s.abs().max().item() + 1.0
    assert scores.shape == ref_s.shape and indices.shape == ref_i.shape
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())
    assert bool((scores[:, -1] >= ref_s[:, -1] - tol * scale).all())
    torch.testing.assert_close(scores, ref_s, atol=tol * scale, rtol=0)
    recall = sum(len(set(a) & set(b)) for a, b in zip(indices.tolist(), ref_i.tolist())) / ref_i.numel()
    assert recall >= (0.999 if dtype == torch.float32 else 0.98), recall


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("sim, dtype", KERNEL_VARIANTS, ids=lambda x: str(x).replace("torch.", ""))
def test_gpu_kernel_variant(sim, dtype):
    """One compile per variant: B = 1, odd N, k = 1 / 10 / 128, a large ragged batch, and the
    lazy fallback (every passage five times in a row), all with the same pinned config."""
    cfg = pinned_lazy(sim, dtype)
    sims = (sim, "flat_cosine") if sim == "cosine" else (sim,)
    for s in sims:
        for B, N, k in [(1, 100_003, 10), (300, 20_011, 1), (2_000, 30_011, 128)]:
            q, p = gpu_inputs(s, B, N, dtype)
            check_gpu(q, p, k, s, *similarity_topk_triton(q, p, k, s, config=cfg), dtype)
    q, p = gpu_inputs(sim, 70, 4_000, dtype)
    p5 = p.repeat_interleave(5, dim=0)  # (20_000, ...) each passage five times: more than LAZY_M per tile
    scores, indices = similarity_topk_triton(q, p5, 100, sim, config=cfg)
    assert launcher.last_fallback_rows > 0
    ref_s, _ = similarity_topk_torch(q, p5, 100, sim)
    torch.testing.assert_close(scores, ref_s, atol=1e-5 * (ref_s.abs().max().item() + 1.0), rtol=0)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("sim", ["cosine", "maxsim"])
def test_gpu_lazy_matches_merge(sim):
    """The merge kernel (one compile each): same answer as the pinned lazy kernel, and k > N."""
    lazy_cfg, merge_cfg = (
        pinned_lazy(sim, torch.bfloat16),
        choose_config(sim, 512, 100, torch.bfloat16, 4, 8, algo="merge"),
    )
    q, p = gpu_inputs(sim, 70, 20_011, torch.bfloat16)
    lazy = similarity_topk_triton(q, p, 100, sim, config=lazy_cfg)  # a few rows may be torch-recomputed
    merge = similarity_topk_triton(q, p, 100, sim, config=merge_cfg)
    scale = merge[0].abs().max().item() + 1.0
    torch.testing.assert_close(lazy[0], merge[0], atol=1e-5 * scale, rtol=0)  # summation order only
    check_gpu(q, p, 100, sim, *merge, torch.bfloat16)
    q, p = gpu_inputs(sim, 5, 50, torch.bfloat16)  # k > N: all 50
    check_gpu(q, p, 100, sim, *similarity_topk_triton(q, p, 100, sim, config=merge_cfg), torch.bfloat16)


TABLE_SHAPES = [("dot", 1, 10), ("cosine", 1024, 10), ("cosine", 4096, 100)]  # (sim, B, k), N = 200_003


@pytest.mark.gpu
@gpu
def test_gpu_table_configs_at_benchmark_like_shapes():
    """The configs the table picks on this GPU (3 compiles), through the kernel; small searches
    go to the dense path in ``similarity_topk``, larger ones to the kernel."""
    for sim, B, k in TABLE_SHAPES:
        q, p = gpu_inputs(sim, B, 200_003, torch.bfloat16)
        check_gpu(q, p, k, sim, *similarity_topk_triton(q, p, k, sim), torch.bfloat16)
    q, p = gpu_inputs("cosine", 1024, 200_003, torch.bfloat16)
    check_gpu(q, p, 10, "cosine", *similarity_topk(q, p, 10, "cosine"), torch.bfloat16)
    assert dispatch.last_path == "triton"  # 1024 * 200_003 * 4 bytes > 64 MiB
    for sim in ("dot", "cosine", "flat_cosine"):
        q, p = gpu_inputs(sim, 16, 50_001, torch.bfloat16)
        check_gpu(q, p, 100, sim, *similarity_topk(q, p, 100, sim), torch.bfloat16)
        assert dispatch.last_path == "dense"


@pytest.mark.gpu
@gpu
def test_gpu_autotune_matches_fixed_table(monkeypatch):
    """Autotuning over the table config and one variant (one extra compile)."""
    monkeypatch.setattr(launcher, "candidate_configs", lambda base, sim: candidate_configs(base, sim)[:2])
    launcher._TUNED.clear()
    q, p = gpu_inputs("cosine", 1024, 200_003, torch.bfloat16)
    want = similarity_topk_triton(q, p, 10, "cosine")
    got = similarity_topk_triton(q, p, 10, "cosine", autotune=True)
    assert torch.equal(got[1], want[1])
    torch.testing.assert_close(got[0], want[0])


@pytest.mark.gpu
@gpu
def test_gpu_sort_row_topk(monkeypatch):
    """The tl.sort fallback (triton builds without tl.topk), compiled once; bitonic ran above."""
    q, p = gpu_inputs("dot", 1, 200_003, torch.bfloat16)
    want = similarity_topk_triton(q, p, 10)
    monkeypatch.setenv("JOINT_RAG_TRITON_TOPK", "sort")
    got = similarity_topk_triton(q, p, 10)
    assert torch.equal(got[1], want[1])
    torch.testing.assert_close(got[0], want[0])


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize(
    "sim, dtype",
    [("dot", torch.bfloat16), ("cosine", torch.bfloat16), ("dot", torch.float32)],
    ids=lambda x: str(x).replace("torch.", ""),
)
def test_gpu_binmax(sim, dtype):
    """The two-pass binned-max search (kernels/binmax.py) compiled: B = 1, odd N, k = 1 / 100, a
    large ragged batch, k > N, and ties at tau (every passage five times); each (B bucket, k)
    compiles its own pass-1 config (about 4 compiles per variant)."""
    for B, N, k in [(1, 100_003, 10), (300, 20_011, 1), (600, 200_003, 100), (5, 50, 100)]:
        q, p = gpu_inputs(sim, B, N, dtype)
        check_gpu(q, p, k, sim, *similarity_topk_triton(q, p, k, sim, algo="binmax"), dtype)
    q, p = gpu_inputs(sim, 70, 4_000, dtype)
    p5 = p.repeat(5, 1)  # (20_000, D): equal bin maxima at tau
    scores, indices = similarity_topk_triton(q, p5, 100, sim, algo="binmax")
    assert launcher.last_fallback_rows > 0
    ref_s, _ = similarity_topk_torch(q, p5, 100, sim)
    torch.testing.assert_close(scores, ref_s, atol=1e-4 * (ref_s.abs().max().item() + 1.0), rtol=0)
    for row in indices.tolist():  # of equal scores the smaller index (copies are 4_000 apart)
        assert all(i - 4_000 in row for i in row if i >= 4_000)
