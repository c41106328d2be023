"""The faiss index types (flat, IVF-Flat, IVF-PQ, HNSW): parameters from YAML with defaults from
N, recall against exact search, every row valid, save/load, and one-line errors."""

from __future__ import annotations

import pytest
import torch

from joint_rag.kernels import similarity
from joint_rag.retrieval import faiss_types
from joint_rag.retrieval.index import PassageIndex

APPROXIMATE = ("faiss_ivf", "faiss_ivfpq", "faiss_hnsw")


def _clustered(n: int = 4000, d: int = 32, b: int = 64, seed: int = 0):
    """Vectors around 40 centres (as embeddings are), (n, 1, d), and queries near them, (b, 1, d)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(40, d, generator=g)
    pick = lambda m: centres[torch.randint(0, 40, (m,), generator=g)] + 0.5 * torch.randn(m, d, generator=g)  # noqa: E731
    return pick(n).unsqueeze(1), pick(b).unsqueeze(1), [f"p{i}" for i in range(n)]


def _recall(rows: torch.Tensor, want: torch.Tensor) -> float:
    return sum(len(set(a.tolist()) & set(w.tolist())) for a, w in zip(rows, want)) / want.numel()


@pytest.mark.parametrize(
    ("backend", "floor"), [("faiss", 1.0), ("faiss_ivf", 0.95), ("faiss_ivfpq", 0.7), ("faiss_hnsw", 0.95)]
)
def test_recall_at_10_against_exact_search(backend, floor):
    vectors, queries, ids = _clustered()
    want = similarity(queries, vectors, "cosine").topk(10, dim=1)
    scores, rows = PassageIndex(vectors, ids, "cosine", backend).search(queries, 10)
    assert (
        _recall(rows, want.indices) >= floor
    )  # measured: 1.000 / 1.000 / 0.745 (6-bit codes at N = 4000) / 1.000
    if backend != "faiss_ivfpq":  # PQ scores are approximate (compressed vectors)
        exact = similarity(queries, vectors, "cosine").gather(1, rows)
        assert torch.allclose(scores, exact, atol=1e-5)


def test_defaults_are_chosen_from_n_and_d():
    p = faiss_types.resolve("faiss_ivfpq", None, 1_000_000, 384)
    assert (p.nlist, p.nprobe, p.pq_m, p.pq_bits) == (4000, 500, 96, 8) and p.train_size == 256_000
    small = faiss_types.resolve("faiss_ivf", None, 200, 384)
    assert small.nlist == 5 and small.nprobe == 1 and small.train_size == 200  # at least 39 per centroid
    assert faiss_types.resolve("faiss_ivfpq", {"nlist": 2}, 300, 384).pq_bits == 2
    assert faiss_types.resolve("faiss_ivf", {"nlist": 64, "nprobe": 8}, 10_000, 384).nprobe == 8


def test_every_row_is_valid_when_the_probed_lists_hold_too_few():
    vectors, queries, ids = _clustered(n=300)
    index = PassageIndex(vectors, ids, "dot", "faiss_ivf", params={"nlist": 7, "nprobe": 1})
    _, rows = index.search(queries, 100)  # one list holds fewer than 100 passages
    assert bool((rows >= 0).all()) and rows.shape == (64, 100)
    assert index.params.nprobe == 1  # restored after the exhaustive retry


@pytest.mark.parametrize("backend", APPROXIMATE)
def test_save_load_round_trip_keeps_the_type_and_its_parameters(tmp_path, backend):
    vectors, queries, ids = _clustered(n=1000)
    index = PassageIndex(vectors, ids, "flat_cosine", backend, params={"seed": 3})
    loaded = PassageIndex.load(index.save(tmp_path / "idx"))
    assert loaded.backend == backend and loaded.params == index.params
    a, b = index.search(queries, 5), loaded.search(queries, 5)
    assert torch.equal(a[1], b[1]) and torch.allclose(a[0], b[0])


@pytest.mark.parametrize(
    ("backend", "params", "message"),
    [
        ("faiss_ivf", {"nprobe": 50, "nlist": 10}, "nprobe=50 must lie in \\[1, nlist=10\\]; lower nprobe"),
        ("faiss_ivf", {"nlist": 5000}, "nlist=5000 must lie in \\[1, N=1000\\]"),
        ("faiss_ivfpq", {"pq_m": 5}, "pq_m=5 must divide the vector dimension 32"),
        ("faiss_ivf", {"nprob": 2}, "unknown keys \\['nprob'\\]"),
        ("faiss_hnsw", {"hnsw_m": 1}, "hnsw_m must be >= 2"),
        ("exact", {"nlist": 4}, "apply to the faiss backends, not to 'exact'"),
        ("faiss_annoy", None, "index backend must be one of"),
    ],
)
def test_bad_parameters_say_what_to_change(backend, params, message):
    vectors, _, ids = _clustered(n=1000)
    with pytest.raises(ValueError, match=message):
        PassageIndex(vectors, ids, "cosine", backend, params=params)


def test_gpu_faiss_requested_without_it(monkeypatch):
    monkeypatch.setattr(faiss_types, "gpu_available", lambda: False)
    vectors, _, ids = _clustered(n=500)
    with pytest.raises(ValueError, match="use_gpu: true but this faiss has no GPU support"):
        PassageIndex(vectors, ids, "cosine", "faiss_hnsw", params={"use_gpu": True})
    PassageIndex(vectors, ids, "cosine", "faiss_hnsw", params={"use_gpu": None})  # auto: CPU here


def test_an_approximate_index_trains_and_exports_from_yaml(tmp_path):
    """`model.index_backend` and `model.index_params` in a fit, then the export loads it back."""
    from smoke_fit import fit_smoke

    from joint_rag import JointRAG
    from joint_rag.export import export_module

    cli, _ = fit_smoke(
        tmp_path / "run", "--model.index_backend=faiss_ivf", '--model.index_params={"nlist": 4, "nprobe": 2}'
    )
    system = cli.model.system
    assert system.index.backend == "faiss_ivf" and system.index.params.nlist == 4
    rag = JointRAG.from_pretrained(export_module(cli.model, tmp_path / "exp"))
    assert rag.system.index.backend == "faiss_ivf" and rag.system.index.params.nprobe == 2
    assert len(rag.retrieve(["Who plays the oboe?"], k=3)[0]) == 3


def test_index_scale_benchmark_dry_run(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "index_scale.py"
    spec = importlib.util.spec_from_file_location("index_scale", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "scale.json"
    assert (
        bench.main(["--n", "3000", "--data", "clustered", "--types", "exact,faiss_ivf", "--out", str(out)])
        == 0
    )
    run = json.loads(out.read_text())["runs"]["clustered/N=3000"]["rows"]
    assert run["exact"]["recall@10"] == 1.0 and 0.0 < run["faiss_ivf"]["recall@10"] <= 1.0
    assert set(run["faiss_ivf"]["speedup_vs_exact"]) == {"1", "64", "1024"}
    assert json.loads(out.read_text())["machine"]["cores"]
