"""PassageIndex: build, search on both backends, save/load round trip and validation."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
import torch

from joint_rag.index import passage_index as pi
from joint_rag.index.passage_index import IndexFormatError, PassageIndex, torch_exact_search


def _corpus(n: int = 37, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    gen = torch.Generator().manual_seed(seed)
    vectors = torch.nn.functional.normalize(torch.randn(n, d, generator=gen), dim=-1)  # (N, D)
    return vectors, [f"p{i}" for i in range(n)]


def _queries(b: int = 5, d: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, d, generator=torch.Generator().manual_seed(seed))  # (B, D)


def test_search_hand_example() -> None:
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # (3, 2)
    index = PassageIndex.build(vectors, ["a", "b", "c"], step=7)
    scores, rows = index.search(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), k=2)
    # q0: a=1.0, c=0.6, b=0 ; q1: b=2.0, c=1.6, a=0
    assert rows.tolist() == [[0, 2], [1, 2]]
    torch.testing.assert_close(scores, torch.tensor([[1.0, 0.6], [2.0, 1.6]]))
    assert scores.dtype == torch.float32 and rows.dtype == torch.long
    assert index.ids_for(rows) == [["a", "c"], ["b", "c"]]
    assert index.ids_for(rows[0]) == ["a", "c"]
    assert index.ids_for(2) == "c"
    assert index.step == 7 and len(index) == 3 and index.dim == 2


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_backends_agree_with_brute_force(metric: str) -> None:
    vectors, ids = _corpus()
    queries = _queries()
    if metric == "ip":
        expected = queries @ vectors.T  # (B, N)
    else:
        expected = -(torch.cdist(queries, vectors) ** 2)  # (B, N)
    ref_scores, ref_rows = expected.topk(6, dim=-1)
    for backend in ("faiss", "torch"):
        index = PassageIndex.build(vectors, ids, metric=metric, backend=backend)
        scores, rows = index.search(queries, k=6)
        assert torch.equal(rows, ref_rows), backend
        torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=1e-5)
        assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_torch_search_chunking_matches_unchunked() -> None:
    vectors, _ = _corpus(n=53)
    queries = _queries()
    full_scores, full_rows = torch_exact_search(queries, vectors, 9, chunk_size=10_000)
    for chunk in (1, 4, 10, 53):
        scores, rows = torch_exact_search(queries, vectors, 9, chunk_size=chunk)
        assert torch.equal(rows, full_rows), chunk
        torch.testing.assert_close(scores, full_scores)


def test_k_larger_than_n_is_clamped() -> None:
    vectors, ids = _corpus(n=4)
    for backend in ("faiss", "torch"):
        scores, rows = PassageIndex.build(vectors, ids, backend=backend).search(_queries(b=2), k=10)
        assert scores.shape == rows.shape == (2, 4)
        assert sorted(rows[0].tolist()) == [0, 1, 2, 3]


def test_exact_search_hook_is_used() -> None:
    vectors, ids = _corpus(n=10)
    calls = []

    def fake_kernel(q: torch.Tensor, p: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append((q.shape, p.shape, k))
        return torch_exact_search(q, p, k)

    index = PassageIndex.build(vectors, ids, backend="torch", exact_search=fake_kernel)
    index.search(_queries(b=3), k=4)
    assert calls == [((3, 8), (10, 8), 4)]
    with pytest.raises(ValueError, match="backend='torch'"):
        PassageIndex.build(vectors, ids, exact_search=fake_kernel)


def test_numpy_inputs_and_grad_queries() -> None:
    vectors, ids = _corpus(n=10)
    index = PassageIndex.build(vectors.numpy(), ids)
    scores_np, rows_np = index.search(_queries().numpy(), k=3)
    scores_t, rows_t = index.search(_queries().requires_grad_(), k=3)
    assert torch.equal(rows_np, rows_t) and not scores_t.requires_grad
    assert index.ids_for(np.int64(1)) == "p1"


def test_build_errors() -> None:
    vectors, ids = _corpus(n=5)
    with pytest.raises(ValueError, match="empty"):
        PassageIndex.build(torch.empty(0, 8), [])
    with pytest.raises(ValueError, match="2-D"):
        PassageIndex.build(torch.ones(8), ["a"])
    with pytest.raises(ValueError, match="5 vectors but 4 passage_ids"):
        PassageIndex.build(vectors, ids[:4])
    with pytest.raises(ValueError, match="duplicate"):
        PassageIndex.build(vectors, ["a", "a", "b", "c", "d"])
    bad = vectors.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite values in vector rows \[3\]"):
        PassageIndex.build(bad, ids)
    with pytest.raises(ValueError, match="metric"):
        PassageIndex.build(vectors, ids, metric="cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        PassageIndex.build(vectors, ids, backend="annoy")  # type: ignore[arg-type]


def test_search_errors() -> None:
    vectors, ids = _corpus(n=5)
    index = PassageIndex.build(vectors, ids)
    with pytest.raises(ValueError, match=r"shape \(B, 8\).*got \(2, 4\)"):
        index.search(torch.ones(2, 4), k=1)
    with pytest.raises(ValueError, match=r"shape \(B, 8\)"):
        index.search(torch.ones(8), k=1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(torch.ones(1, 8), k=0)
    with pytest.raises(IndexError, match="out of range"):
        index.ids_for(5)


def test_use_gpu_without_gpu_support_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pi, "_faiss_num_gpus", lambda: 0)
    vectors, ids = _corpus(n=5)
    with pytest.raises(RuntimeError, match="no GPU support.*faiss-gpu"):
        PassageIndex.build(vectors, ids, use_gpu=True)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            PassageIndex.build(vectors, ids, use_gpu=True, backend="torch")


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_save_load_round_trip(tmp_path, backend: str) -> None:
    vectors, ids = _corpus()
    index = PassageIndex.build(vectors, ids, metric="ip", backend=backend, step=42)
    target = tmp_path / "idx"
    assert index.save(target) == target
    assert sorted(p.name for p in target.iterdir()) == ["index.faiss", "meta.json", "passage_ids.json"]
    assert list(tmp_path.iterdir()) == [target]  # no temp folders left behind
    meta = json.loads((target / "meta.json").read_text())
    assert meta["dim"] == 8 and meta["count"] == 37 and meta["metric"] == "ip"
    assert meta["built_at_step"] == 42 and meta["format_version"] == pi.FORMAT_VERSION
    assert faiss.read_index(str(target / "index.faiss")).ntotal == 37  # plain faiss format

    for load_backend in ("faiss", "torch"):
        loaded = PassageIndex.load(target, backend=load_backend)
        assert loaded.passage_ids == ids and loaded.step == 42 and loaded.backend == load_backend
        s0, r0 = index.search(_queries(), k=5)
        s1, r1 = loaded.search(_queries(), k=5)
        assert torch.equal(r0, r1)
        torch.testing.assert_close(s0, s1)


def test_save_overwrites_previous_index_and_refuses_other_folders(tmp_path) -> None:
    vectors, ids = _corpus(n=6)
    target = tmp_path / "idx"
    PassageIndex.build(vectors, ids, step=1).save(target)
    PassageIndex.build(vectors[:3], ids[:3], step=2).save(target)
    loaded = PassageIndex.load(target)
    assert len(loaded) == 3 and loaded.step == 2
    assert list(tmp_path.iterdir()) == [target]

    other = tmp_path / "results"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an index folder"):
        PassageIndex.build(vectors, ids).save(other)
    assert (other / "keep.txt").exists()


def test_failed_save_leaves_nothing(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    vectors, ids = _corpus(n=6)
    target = tmp_path / "idx"
    PassageIndex.build(vectors, ids, step=1).save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def broken_write(index, path: str) -> None:
        with open(path, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(faiss, "write_index", broken_write)
    with pytest.raises(RuntimeError, match="disk full"):
        PassageIndex.build(vectors[:2], ids[:2], step=9).save(target)
    with pytest.raises(RuntimeError, match="disk full"):
        PassageIndex.build(vectors[:2], ids[:2]).save(tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before


def test_load_validation(tmp_path) -> None:
    vectors, ids = _corpus(n=6)
    good = tmp_path / "good"
    PassageIndex.build(vectors, ids).save(good)

    def broken(name: str) -> object:
        import shutil

        folder = tmp_path / name
        shutil.copytree(good, folder)
        return folder

    with pytest.raises(IndexFormatError, match="not a folder"):
        PassageIndex.load(tmp_path / "nope")

    folder = broken("missing")
    (folder / "passage_ids.json").unlink()
    with pytest.raises(IndexFormatError, match=r"missing.*missing passage_ids.json"):
        PassageIndex.load(folder)

    folder = broken("count")
    (folder / "passage_ids.json").write_text(json.dumps(ids[:5]))
    with pytest.raises(IndexFormatError, match="6 vectors but passage_ids.json 5 ids"):
        PassageIndex.load(folder)

    folder = broken("dim")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "dim": 16}))
    with pytest.raises(IndexFormatError, match="dim 8 != meta.json dim 16"):
        PassageIndex.load(folder)

    folder = broken("metric")
    (folder / "meta.json").write_text(json.dumps({**meta, "metric": "l2"}))
    with pytest.raises(IndexFormatError, match="metric type"):
        PassageIndex.load(folder)

    folder = broken("version")
    (folder / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(IndexFormatError, match="format_version 99"):
        PassageIndex.load(folder)

    folder = broken("garbage")
    (folder / "index.faiss").write_bytes(b"not faiss")
    with pytest.raises(IndexFormatError, match="garbage.*not a readable faiss index"):
        PassageIndex.load(folder)

    folder = broken("json")
    (folder / "meta.json").write_text("{")
    with pytest.raises(IndexFormatError, match="unreadable json"):
        PassageIndex.load(folder)
    assert issubclass(IndexFormatError, ValueError)


def test_torch_backend_search_uses_the_kernel_dispatch(monkeypatch):
    import joint_rag.kernels as kernels

    calls = []
    real = kernels.similarity_topk

    def spy(q, p, k, similarity="dot", **kw):
        calls.append(similarity)
        return real(q, p, k, similarity, **kw)

    monkeypatch.setattr(kernels, "similarity_topk", spy)
    vecs = torch.randn(50, 8)
    index = PassageIndex.build(vecs, [f"p{i}" for i in range(50)], backend="torch")
    scores, rows = index.search(vecs[:3], 5)
    assert calls == ["dot"]
    ref = torch.topk(vecs[:3] @ vecs.T, 5)
    assert torch.equal(rows, ref.indices) and torch.allclose(scores, ref.values, atol=1e-5)
