"""The kernel's config table (`kernels/configs.py`) and key packing: pure Python and torch, no
kernel runs and triton is never imported here.

The tables are the compiled (GPU) ones: each test removes TRITON_INTERPRET, which makes the
launcher pick the table it would use on a GPU.
"""

import pytest
import torch

from joint_rag.kernels import configs
from joint_rag.kernels.configs import candidate_configs, choose_config, choose_lazy_m
from joint_rag.kernels.launcher import pack_keys, unpack_keys

SIMS = ("dot", "cosine", "flat_cosine", "maxsim")


def test_lazy_m_choice_keeps_the_fallback_rare():
    assert choose_lazy_m(B=1024, N=1_000_000, k=10, block_n=128, k_pad=16) == 2
    assert choose_lazy_m(B=1024, N=1_000_000, k=100, block_n=128, k_pad=128) == 4
    assert choose_lazy_m(B=1, N=1_000_000, k=10, block_n=128, k_pad=16) == 1
    assert choose_lazy_m(B=4, N=100, k=50, block_n=64, k_pad=64) == 0  # k close to N: merge
    assert choose_lazy_m(B=4, N=100, k=5, block_n=128, k_pad=8) == 0  # one tile: merge


@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_config_table_is_valid(monkeypatch, sim, dtype):
    """The GPU tables of both algorithms (not used by the interpreter): powers of two, tl.dot
    dims >= 16, merged tiles at least as wide as the running top-k, LAZY_M dividing K_PAD."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    pow2 = lambda x: x > 0 and x & (x - 1) == 0  # noqa: E731
    for B, k, m, mp in [
        (1, 1, 1, 1),
        (16, 10, 4, 8),
        (300, 100, 16, 32),
        (4096, 128, 3, 200),
        (64, 256, 32, 2),
    ]:
        for algo in ("lazy", "merge"):
            base = choose_config(sim, B, k, dtype, m, mp, algo=algo)
            assert (base.lazy_m > 0) == (algo == "lazy"), base  # N = 1e6: lazy is cheap enough
            # the table's config first, then autotune variants
            for cfg in candidate_configs(base, sim):
                assert all(pow2(v) for v in (cfg.k_pad, cfg.block_b, cfg.block_n, cfg.block_d)), cfg
                # lazy dot may keep fewer than k per program (keep_width), never fewer than 16
                assert cfg.k_pad >= min(k, 16) if cfg.lazy_m and sim != "maxsim" else cfg.k_pad >= k, cfg
                assert cfg.block_n >= cfg.k_pad and cfg.block_d >= 16
                if cfg.lazy_m and sim != "maxsim" and cfg == base:
                    assert cfg.block_b * cfg.k_pad <= configs.REG_KEYS, cfg
                assert cfg.lazy_m == 0 or (pow2(cfg.lazy_m) and cfg.k_pad % cfg.lazy_m == 0)
                if sim == "maxsim":
                    assert pow2(cfg.sub_n) and cfg.block_n % cfg.sub_n == 0
                    m_pad, mp_pad = 1 << (m - 1).bit_length(), 1 << (mp - 1).bit_length()
                    assert cfg.block_b * m_pad >= 16 and cfg.sub_n * mp_pad >= 16  # tl.dot rows, columns
                else:
                    assert cfg.block_b >= 16 and cfg.block_n >= 16


def test_large_k_keeps_a_narrow_width_and_big_query_blocks(monkeypatch):
    """k = 100 at large B: each program keeps 16 or 32 keys, so BLOCK_B reaches 128 (the
    width that compile_check verified without spills on triton 3.6 and 3.9)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    want = {1: (16, 16), 64: (64, 16), 512: (128, 16), 1024: (128, 16), 4096: (128, 32)}
    for B, (block_b, width) in want.items():
        cfg = choose_config("cosine", B, 100, torch.bfloat16, N=1_000_000)
        assert (cfg.block_b, cfg.k_pad, cfg.lazy_m) == (block_b, width, 4 if B > 1 else 2), (B, cfg)
    assert choose_config("dot", 1024, 10, torch.bfloat16).k_pad == 16  # k <= 32: unchanged
    assert configs.keep_width(512, 100, 128, splits=132) == 16
    assert configs.keep_width(512, 100, 128, splits=1) == 128  # one split must hold all k
    assert configs.keep_width(512, 20, 32, splits=132) == 32  # below NARROW_FROM


def test_pack_keys_order_and_roundtrip():
    s = torch.tensor([0.0, -0.0, 1.5, -1.5, float("inf"), float("-inf"), 3e-39, -3e-39, 1.5])
    i = torch.arange(s.numel())
    keys = pack_keys(s, i)
    back_s, back_i = unpack_keys(keys)
    assert torch.equal(back_i, i) and torch.equal(back_s.view(torch.int32), s.view(torch.int32))
    order = keys.argsort(descending=True)
    assert bool((s[order][:-1] >= s[order][1:]).all())
    assert order.tolist().index(2) < order.tolist().index(8), "equal scores: smaller index first"


def test_measured_dispatch_table_is_built_from_the_committed_benchmark():
    """kernels/measured.py's H200 entry is what its builder makes of the committed run-3 JSON."""
    import json
    from pathlib import Path

    from joint_rag.kernels import measured

    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "similarity_topk_h200.json"
    assert measured.build(json.loads(bench.read_text())) == measured.TABLES["NVIDIA H200"]


def test_dispatch_picks_the_measured_faster_path_within_the_memory_budget(monkeypatch):
    from joint_rag.kernels.dispatch import DENSE_CAP_ENV, path_for

    monkeypatch.delenv(DENSE_CAP_ENV, raising=False)
    h200 = lambda B, N, D, k, sim="cosine", dtype=torch.bfloat16, mem=141 * 2**30: path_for(  # noqa: E731
        B, N, D, k, dtype, sim, "NVIDIA H200", mem
    )
    # run 3: kernel 3.66 ms vs dense >= 4.85 ms at B = 512, N = 1e6, d = 768, k = 100
    assert h200(512, 1_000_000, 768, 100) == "triton"
    # N = 1e5, d = 768, B = 256: the kernel was 0.53-0.58x dense; 100 MB of scores fit the budget
    assert h200(256, 100_000, 768, 10) == "dense" and h200(300, 90_000, 700, 12) == "dense"
    # measured both ways at B = 16, N = 1e6, d = 4096: the kernel won (2.15 vs 2.30 ms)
    assert h200(16, 1_000_000, 4096, 10) == "triton"
    assert h200(4096, 100_000, 4096, 100) == "dense"
    assert h200(4096, 100_000, 4096, 100, mem=4 * 2**30) == "triton"  # 1.6 GB of scores > 25% of 4 GB
    assert h200(4, 100_000, 768, 10, sim="maxsim") == "triton"
    # outside the table (N = 1e7, other GPUs, fp32): the 64 MiB rule
    assert h200(1, 10_000_000, 768, 10) == "dense" and h200(64, 10_000_000, 768, 10) == "triton"
    assert path_for(256, 100_000, 768, 10, torch.bfloat16, "dot", "NVIDIA A100", 2**36) == "triton"
    assert h200(256, 100_000, 768, 10, dtype=torch.float32) == "triton"
    monkeypatch.setenv(DENSE_CAP_ENV, "0")
    assert h200(256, 100_000, 768, 10) == "triton" and h200(1, 1000, 768, 10) == "triton"
