"""Fused similarity + top-k: Triton kernel (CPU interpreter here, compiled with CUDA), torch path,
dispatch and gradients.

Checks survive ties: scores recomputed in fp64 from the returned indices match the returned
scores, rows are sorted, the k-th score is not below the reference k-th score, and on tie-free
random inputs the recall@k against torch.topk of the dense matrix is 1. bf16 is not run by the
interpreter (numpy misreads it; the launcher converts it to fp32 there): bf16 kernels run in the
gpu-marked tests, bf16 inputs on the torch path here.
"""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():  # must precede `import triton` (it fixes triton's own library mode)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from topk_inputs import DEVICE, make_inputs  # noqa: E402  (tests/kernels is on sys.path under pytest)

from joint_rag.kernels import (  # noqa: E402
    dispatch,
    launcher,
    reference,
    rescore,
    resolve_backend,
    similarity,
    similarity_topk,
    similarity_topk_torch,
    similarity_topk_triton,
)
from joint_rag.kernels.launcher import (  # noqa: E402
    choose_config,
    interpreting,
    triton_mode,
)

CUDA = torch.cuda.is_available()
# Without CUDA the Triton tests need the interpreter, which only works if triton was first imported
# with TRITON_INTERPRET=1; if another module imported it earlier, they run in a fresh process.
TRITON_OK = CUDA or (interpreting() and triton_mode() != "compiled")
needs_triton = pytest.mark.skipif(
    not TRITON_OK, reason="triton imported compiled-mode: see test_triton_in_fresh_process"
)
SIMS = ("dot", "cosine", "flat_cosine", "maxsim")


def check_topk(q, p, k, sim, scores, indices, *, tol: float, exact_recall: bool) -> None:
    """Assertions that hold whatever the tie-breaking."""
    B, N = q.shape[0], p.shape[0]
    kk = min(k, N)
    assert scores.shape == indices.shape == (B, kk)
    assert scores.dtype == torch.float32 and indices.dtype == torch.int64
    assert int(indices.min()) >= 0 and int(indices.max()) < N
    assert all(len(set(row.tolist())) == kk for row in indices.cpu()), "repeated passage in a row"
    dense = similarity(q.double().cpu(), p.double().cpu(), sim)  # (B, N) fp64 reference
    recomputed = dense.gather(1, indices.cpu())
    scale = dense.abs().max().item() + 1.0
    torch.testing.assert_close(scores.double().cpu(), recomputed, atol=tol * scale, rtol=0)
    assert bool((scores[:, :-1] >= scores[:, 1:]).all()), "rows not sorted descending"
    ref_s, ref_i = dense.topk(kk, dim=1)
    assert bool((recomputed[:, -1] >= ref_s[:, -1] - tol * scale).all()), "k-th score below the reference"
    if exact_recall:
        for got, want in zip(indices.cpu().tolist(), ref_i.tolist()):
            assert set(got) == set(want)


# ---- torch path ------------------------------------------------------------------------------


@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_chunked_torch_path_equals_dense_topk(sim, chunk):
    q, p = make_inputs(sim, B=5, N=97)
    scores, indices = similarity_topk_torch(q, p, 10, sim, chunk_size=chunk)
    ref_s, ref_i = similarity(q, p, sim).topk(10, dim=1)
    torch.testing.assert_close(scores, ref_s, atol=1e-5, rtol=1e-5)
    assert torch.equal(indices, ref_i)


@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize(
    ("N", "chunk", "k"), [(1000, 1000, 1), (1000, 333, 5), (2051, 700, 9), (5000, 2500, 40)]
)
@pytest.mark.parametrize("B", [1, reference.SMALL_B, reference.SMALL_B + 3])
def test_group_max_selection_equals_dense_topk(sim, N, chunk, k, B):
    # chunks wide enough for the group-max filter (k * GROUP * 2 <= chunk), tails not a
    # multiple of GROUP, a final chunk smaller than the rest; both matmul orientations (B <= SMALL_B
    # scores P @ q.T, a single query padded to two rows)
    q, p = make_inputs(sim, B=B, N=N, D=16)
    assert k * reference.GROUP * 2 <= chunk, "shape does not reach the group-max path"
    scores, indices = similarity_topk_torch(q, p, k, sim, chunk_size=chunk)
    ref_s, ref_i = similarity(q, p, sim).topk(k, dim=1)
    torch.testing.assert_close(scores, ref_s, atol=1e-5, rtol=1e-5)
    assert torch.equal(indices, ref_i)


def test_group_max_keeps_a_chunk_whose_best_scores_share_one_group():
    # all of the top-k sit in one group of GROUP columns: that group must be kept whole
    q = torch.ones(1, 4)
    p = torch.randn(600, 4) * 0.01
    p[32 : 32 + reference.GROUP] += torch.arange(reference.GROUP, 0, -1.0)[:, None]
    scores, indices = similarity_topk_torch(q, p, 8, chunk_size=600)
    assert indices.tolist() == [list(range(32, 40))]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_path_half_inputs_accumulate_in_fp32(dtype):
    q, p = make_inputs("dot", B=4, N=300, D=64, dtype=dtype)
    scores, indices = similarity_topk_torch(q, p, 20, chunk_size=64)
    check_topk(q, p, 20, "dot", scores, indices, tol=1e-5, exact_recall=True)


# ---- Triton kernel -----------------------------------------------------------------------------

SHAPES = [(1, 1, 1), (1, 100, 1), (5, 203, 10), (3, 37, 50), (17, 70, 16)]  # (B, N, k): ragged, k > N


@needs_triton
@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}-N{s[1]}-k{s[2]}")
def test_triton_matches_reference(sim, dtype, shape):
    B, N, k = shape
    q, p = make_inputs(sim, B, N, D=40 if sim in ("dot", "cosine") else 20, m=3, mp=5, dtype=dtype)
    scores, indices = similarity_topk_triton(q, p, k, sim)
    check_topk(q, p, k, sim, scores, indices, tol=1e-5, exact_recall=True)


@needs_triton
@pytest.mark.parametrize("sim", ["dot", "maxsim"])
def test_triton_k128(sim):
    q, p = make_inputs(sim, B=3, N=300, D=32, m=2, mp=4)
    scores, indices = similarity_topk_triton(q, p, 128, sim)
    check_topk(q, p, 128, sim, scores, indices, tol=1e-5, exact_recall=True)


@needs_triton
@pytest.mark.parametrize("sim", ["cosine", "maxsim"])
def test_triton_splits_and_d_tail_do_not_change_result(sim):
    q, p = make_inputs(sim, B=20, N=150, D=45, m=2, mp=3)  # D not a multiple of BLOCK_D
    one = similarity_topk_triton(q, p, 12, sim, num_splits=1)
    many = similarity_topk_triton(q, p, 12, sim, num_splits=7)
    assert torch.equal(one[1], many[1])
    torch.testing.assert_close(one[0], many[0])


@needs_triton
@pytest.mark.parametrize("sim", ["dot", "maxsim"])
def test_ties_prefer_smaller_index(sim):
    q, p = make_inputs(sim, B=4, N=20, D=16, m=2, mp=2)
    p = p.repeat(5, *([1] * (p.dim() - 1)))  # (100, ...) every passage five times
    for scores, indices in (
        similarity_topk_triton(q, p, 9, sim),
        similarity_topk_torch(q, p, 9, sim, chunk_size=8),
    ):
        check_topk(q, p, 9, sim, scores, indices, tol=1e-5, exact_recall=False)
    scores, indices = similarity_topk_triton(q, p, 9, sim)
    assert bool((indices[:, 0] < 20).all()), "the first of equal scores should be the smallest index"


@needs_triton
def test_bf16_is_converted_in_the_interpreter_and_native_on_gpu():
    q, p = make_inputs("dot", B=3, N=90, D=32, dtype=torch.bfloat16)
    scores, indices = similarity_topk_triton(q, p, 7)
    check_topk(q, p, 7, "dot", scores, indices, tol=1e-5, exact_recall=True)


@needs_triton
@pytest.mark.parametrize("sim", ["dot", "cosine", "maxsim"])
def test_lazy_and_merge_algorithms_agree(sim):
    q, p = make_inputs(sim, B=6, N=400, D=24, m=2, mp=3)
    lazy = similarity_topk_triton(q, p, 8, sim, algo="lazy")
    assert choose_config(sim, 6, 8, torch.float32, 2, 3, N=400, algo="lazy").lazy_m > 0
    assert launcher.last_fallback_rows == 0
    merge = similarity_topk_triton(q, p, 8, sim, algo="merge")
    assert torch.equal(lazy[1], merge[1])
    torch.testing.assert_close(lazy[0], merge[0])
    check_topk(q, p, 8, sim, *lazy, tol=1e-5, exact_recall=True)


@needs_triton
@pytest.mark.parametrize("sim", ["dot", "maxsim"])
@pytest.mark.parametrize("lazy_m", [1, 2])
def test_lazy_overflow_falls_back_and_stays_exact(sim, lazy_m):
    """Every passage three times in adjacent rows: a 16-passage tile holds three copies of each of
    its best passages, more than LAZY_M, so the overflow bound reaches the k-th score and the
    affected queries are recomputed by the torch path."""
    q, p = make_inputs(sim, B=5, N=40, D=16, m=2, mp=2)
    p = p.repeat_interleave(3, dim=0)  # (120, ...) rows 3i, 3i+1, 3i+2 equal
    base = choose_config(sim, 5, 6, torch.float32, 2, 2, N=120, algo="merge")
    cfg = dataclasses.replace(base, lazy_m=lazy_m)
    scores, indices = similarity_topk_triton(q, p, 6, sim, config=cfg)
    assert launcher.last_fallback_rows > 0, "the duplicates should have triggered the fallback"
    check_topk(q, p, 6, sim, scores, indices, tol=1e-5, exact_recall=False)
    ref_s, ref_i = similarity_topk_torch(q, p, 6, sim)
    assert torch.equal(indices, ref_i)  # ties: smaller index first, as the torch path


@needs_triton
def test_lazy_without_overflow_needs_no_fallback():
    """Tie-free passages spread at random: the kernel's answer is used as is (no torch rows)."""
    q, p = make_inputs("cosine", B=4, N=600, D=32)
    cfg = dataclasses.replace(choose_config("cosine", 4, 5, torch.float32, N=600, algo="merge"), lazy_m=4)
    scores, indices = similarity_topk_triton(q, p, 5, "cosine", config=cfg, num_splits=3)
    assert launcher.last_fallback_rows == 0
    check_topk(q, p, 5, "cosine", scores, indices, tol=1e-5, exact_recall=True)


@needs_triton
@pytest.mark.parametrize("impl", ["bitonic", "sort"])
def test_row_topk_variants_agree(monkeypatch, impl):
    """The GPU's tl.topk (bitonic) and the sort fallback, run once on tiny tiles (slow in the
    interpreter); the module is reloaded with the chosen helper and back afterwards."""
    q, p = make_inputs("dot", B=2, N=40, D=16)
    want = similarity_topk_triton(q, p, 3)
    monkeypatch.setenv("JOINT_RAG_TRITON_TOPK", impl)
    got = similarity_topk_triton(q, p, 3, num_splits=1)
    assert torch.equal(got[1], want[1])
    torch.testing.assert_close(got[0], want[0])


@needs_triton
def test_narrow_width_stays_exact():
    """Each program keeps 8 keys for k = 20: with 3 splits some split holds >= 8 of a query's
    top-20 (its 8th kept score reaches the k-th score), with 1 split fewer than k keys exist at
    all; both go to the torch fallback, and the answer equals the torch path's."""
    q, p = make_inputs("dot", B=6, N=300, D=16)
    cfg = dataclasses.replace(
        choose_config("dot", 6, 20, torch.float32, N=300, algo="merge"), k_pad=8, lazy_m=2
    )
    for splits in (1, 3):
        scores, indices = similarity_topk_triton(q, p, 20, config=cfg, num_splits=splits)
        assert launcher.last_fallback_rows > 0
        ref_s, ref_i = similarity_topk_torch(q, p, 20)
        assert torch.equal(indices, ref_i)
        torch.testing.assert_close(scores, ref_s)
    q, p = make_inputs("cosine", B=5, N=700, D=24)
    cfg = dataclasses.replace(
        choose_config("cosine", 5, 50, torch.float32, N=700, algo="merge"), k_pad=16, lazy_m=2
    )
    scores, indices = similarity_topk_triton(q, p, 50, "cosine", config=cfg, num_splits=7)
    check_topk(q, p, 50, "cosine", scores, indices, tol=1e-5, exact_recall=True)


@needs_triton
@pytest.mark.parametrize("sim", ["dot", "cosine"])
def test_timing_probe_scores_tiles_and_keeps_only_the_row_max(sim):
    """PROBE=1 (benchmarks/similarity_topk_probe.py) scores every tile as the search does but
    keeps no top-k: its per-query bound is the row max of the dense scores, its keys are empty."""
    q, p = make_inputs(sim, B=20, N=300, D=40)
    mod = launcher.kernels_module()
    cfg = choose_config(sim, 20, 10, torch.float32, N=300)
    assert cfg.lazy_m > 0
    qq, pp, scales = launcher._prepare(q, p, sim)
    keys, bound = launcher._launch(mod, sim, qq, pp, scales, cfg, 3, probe=1)
    torch.testing.assert_close(bound, similarity(q, p, sim).amax(dim=1), atol=1e-5, rtol=0)
    assert bool((keys == launcher._MIN_KEY).all())
    keys, _ = launcher._launch(mod, sim, qq, pp, scales, cfg, 3)  # the search kernel is unchanged
    assert bool((keys != launcher._MIN_KEY).any())
    with pytest.raises(ValueError, match="dot kernel only"):
        qm, pm = make_inputs("maxsim", B=2, N=10, D=8, m=2, mp=2)
        launcher._launch(
            mod, "maxsim", qm, pm, None, choose_config("maxsim", 2, 3, torch.float32, 2, 2), 1, probe=1
        )


@pytest.mark.slow
def test_probe_benchmark_dry_run(tmp_path):
    """benchmarks/similarity_topk_probe.py end to end in the interpreter (fresh process)."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [
        sys.executable,
        str(root / "benchmarks" / "similarity_topk_probe.py"),
        "--dry-run",
        "--out-dir",
        str(tmp_path),
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    import json

    rows = json.loads((tmp_path / "similarity_topk_probe_dry_run.json").read_text())["rows"]
    entries = [e for row in rows for e in row["configs"].values()]
    assert entries and all("error" not in e for e in entries)
    assert all(e["recall_first64"] == 1.0 for e in entries)


# ---- dispatch, gradients, dense scoring -------------------------------------------------------


def test_backend_resolution(monkeypatch):
    q = torch.randn(2, 8)
    monkeypatch.delenv("JOINT_RAG_SIMILARITY_BACKEND", raising=False)
    assert resolve_backend(q, 10) == "torch"  # CPU tensors: torch even under the interpreter
    assert resolve_backend(q, 10, "triton") == "triton"
    monkeypatch.setenv("JOINT_RAG_SIMILARITY_BACKEND", "triton")
    assert resolve_backend(q, 10) == "triton"
    with pytest.raises(ValueError, match="backend"):
        resolve_backend(q, 10, "cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if not CUDA:
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            similarity_topk_triton(q, torch.randn(5, 8), 2)


@pytest.mark.parametrize(
    "q_shape, p_shape, sim, match",
    [
        ((2, 8), (5, 8), "l2", "unknown"),
        ((2, 3, 8), (5, 8), "dot", "multi-vector queries"),
        ((2, 8), (5, 8), "mean_dot", "is now 'dot'"),
        ((2, 8), (5, 7), "dot", "dim D"),
        ((2, 3, 8), (5, 4, 8), "flat_cosine", "same number"),
    ],
)
def test_errors_name_the_problem(q_shape, p_shape, sim, match):
    with pytest.raises(ValueError, match=match):
        similarity_topk(torch.randn(q_shape), torch.randn(p_shape), 3, sim)


def test_k_must_be_positive():
    with pytest.raises(ValueError, match="k=0"):
        similarity_topk(torch.randn(2, 4), torch.randn(5, 4), 0)


@pytest.mark.parametrize("sim", SIMS)
def test_dense_similarity_per_query_candidates(sim):
    q, p = make_inputs(sim, B=3, N=11)
    idx = torch.tensor([[0, 4, 7], [1, 1, 10], [5, 2, 3]], device=DEVICE)
    per_query = similarity(q, p[idx], sim)  # (B, C)
    torch.testing.assert_close(per_query, similarity(q, p, sim).gather(1, idx))


@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_gradients_match_dense_reference(sim, backend):
    q, p = make_inputs(sim, B=4, N=60, D=16, m=2, mp=3)
    w = torch.randn(4, 6, device=DEVICE)
    q1, p1 = q.clone().requires_grad_(), p.clone().requires_grad_()
    scores, indices = similarity_topk(q1, p1, 6, sim, backend=backend)
    (scores * w).sum().backward()
    q2, p2 = q.clone().requires_grad_(), p.clone().requires_grad_()
    ref_s, ref_i = similarity(q2, p2, sim).topk(6, dim=1)
    (ref_s * w).sum().backward()
    assert torch.equal(indices, ref_i)
    torch.testing.assert_close(scores, ref_s)
    torch.testing.assert_close(q1.grad, q2.grad)
    torch.testing.assert_close(p1.grad, p2.grad)
    untouched = torch.ones(60, dtype=torch.bool, device=DEVICE)
    untouched[indices.flatten()] = False
    assert p1.grad[untouched].abs().sum() == 0, "gradient reached passages that were not selected"


@pytest.mark.parametrize("sim", ["dot", "cosine", "flat_cosine"])
def test_dense_topk_equals_reference(sim):
    """The small-search path (dense fp32 scores + torch.topk); dispatch uses it on CUDA only."""
    q, p = make_inputs(sim, B=5, N=97)
    scores, indices = dispatch.dense_topk(q, p, 10, sim)
    check_topk(q, p, 10, sim, scores, indices, tol=1e-5, exact_recall=True)


def test_dense_path_only_for_small_cuda_searches(monkeypatch):
    q, p = make_inputs("dot", B=4, N=50)
    if not CUDA:
        assert not dispatch.dense_fits(q, p, "dot")  # CPU tensors: never
        similarity_topk(q, p, 3)
        assert dispatch.last_path == "torch"
        return
    assert dispatch.dense_fits(q, p, "dot") and not dispatch.dense_fits(
        *make_inputs("maxsim", 4, 50), "maxsim"
    )
    monkeypatch.setenv(dispatch.DENSE_CAP_ENV, "0")
    assert not dispatch.dense_fits(q, p, "dot")


def test_rescore_equals_gathered_dense_scores():
    q, p = make_inputs("maxsim", B=2, N=9)
    idx = torch.tensor([[3, 1], [8, 0]], device=DEVICE)
    torch.testing.assert_close(rescore(q, p, idx, "maxsim"), similarity(q, p, "maxsim").gather(1, idx))


@pytest.mark.skipif(TRITON_OK, reason="the Triton tests ran in this process")
def test_triton_in_fresh_process():
    """triton was imported before TRITON_INTERPRET=1 was set: rerun this file in a fresh process."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", __file__]
    r = subprocess.run(
        cmd, env=env, cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def _compile_check(*args: str) -> None:
    """Run kernels/compile_check.py in a fresh process (compiling needs triton in compiled mode)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "joint_rag.kernels.compile_check", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode == 77:
        pytest.skip(r.stdout.strip())
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_kernels_compile_for_sm90_without_a_gpu():
    """Triton's CUDA backend + bundled ptxas compile the kernels on a CPU-only machine."""
    _compile_check("--quick")


@pytest.mark.slow
def test_whole_config_table_compiles_for_sm90():
    _compile_check()


# ---- larger shapes -----------------------------------------------------------------------------


@needs_triton
@pytest.mark.slow
@pytest.mark.parametrize("sim", SIMS)
def test_triton_larger_interpreter_shapes(sim):
    q, p = make_inputs(sim, B=40, N=700, D=48, m=4, mp=4)
    for k in (1, 37, 128):
        scores, indices = similarity_topk_triton(q, p, k, sim)
        check_topk(q, p, k, sim, scores, indices, tol=1e-5, exact_recall=True)


@pytest.mark.parametrize("sim", ["dot", "cosine"])
def test_dot_and_cosine_score_the_mean_vectors_in_every_entry_point(sim):
    """One vocabulary: dot/cosine of (B, R, D) queries and (N, R', D) passages are those of the
    mean vectors, in the dense scorer, both top-k paths, the dispatch and the rescoring."""
    torch.manual_seed(0)
    q, p = torch.randn(3, 4, 16), torch.randn(40, 2, 16)
    want = similarity(q.mean(1), p.mean(1), sim)  # (B, N)
    assert torch.allclose(similarity(q, p, sim), want, atol=1e-5)
    per_query = p[torch.arange(6)].view(3, 2, 2, 16)  # (B, C, R', D)
    assert torch.allclose(
        similarity(q, per_query, sim), similarity(q.mean(1), per_query.mean(2), sim), atol=1e-5
    )
    top = want.topk(5, dim=1)
    for fn in (similarity_topk, similarity_topk_torch):
        s, i = fn(q, p, 5, sim)
        assert torch.equal(i, top.indices) and torch.allclose(s, top.values, atol=1e-5)
    assert torch.allclose(rescore(q, p, top.indices, sim), top.values, atol=1e-5)
    # R = 1 multi-vector passages are the single vectors themselves
    assert torch.allclose(similarity(q, p[:, :1], sim), similarity(q.mean(1), p[:, 0], sim), atol=1e-5)
