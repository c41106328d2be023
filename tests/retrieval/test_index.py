"""PassageIndex: both backends search exactly by the configured similarity (the kernels'
vocabulary), the exact one through the kernel dispatch; save/load round trip and validation."""

from __future__ import annotations

import json

import pytest
import torch

from joint_rag.errors import IndexFormatError
from joint_rag.kernels import SIMILARITIES, dispatch, similarity
from joint_rag.retrieval import index as index_mod
from joint_rag.retrieval.index import PassageIndex, flat_vectors


def _data(n: int = 40, r: int = 3, d: int = 8, b: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    vectors = torch.randn(n, r, d, generator=g)  # (N, R, D)
    queries = torch.randn(b, r, d, generator=g)  # (B, R, D)
    return vectors, queries, [f"p{i}" for i in range(n)]


def test_search_hand_example() -> None:
    vectors = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]], [[1.0, 1.0]]])  # (3, 1, 2)
    index = PassageIndex(vectors, ["a", "b", "c"], "dot", step=7)
    scores, rows = index.search(torch.tensor([[[1.0, 0.5]]]), k=3)
    assert rows.tolist() == [[2, 0, 1]] and scores.tolist() == [[1.5, 1.0, 1.0]]
    assert index.step == 7 and len(index) == 3


@pytest.mark.parametrize("sim", SIMILARITIES)
@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_search_equals_the_dense_similarity(sim: str, backend: str) -> None:
    vectors, queries, ids = _data()
    if backend == "faiss" and sim == "maxsim":
        with pytest.raises(ValueError, match="index_backend: exact"):
            PassageIndex(vectors, ids, sim, backend)
        return
    want = similarity(queries, vectors, sim).topk(7, dim=1)  # (B, 7)
    scores, rows = PassageIndex(vectors, ids, sim, backend).search(queries, 7)
    assert torch.equal(rows, want.indices), (sim, backend)
    assert torch.allclose(scores, want.values, atol=1e-5)


def test_exact_search_goes_through_the_kernel_dispatch() -> None:
    vectors, queries, ids = _data()
    dispatch.last_path = ""
    PassageIndex(vectors, ids, "maxsim").search(queries, 3)
    assert dispatch.last_path == "torch"  # on CUDA tensors: "triton" (or "dense" for small searches)


def test_dot_and_cosine_keep_only_the_mean_vectors() -> None:
    vectors, _, ids = _data()
    for sim in ("dot", "cosine"):
        assert PassageIndex(vectors, ids, sim).vectors.shape == (40, 1, 8)
    assert PassageIndex(vectors, ids, "flat_cosine").vectors.shape == (40, 3, 8)
    assert torch.allclose(flat_vectors(vectors, "dot"), vectors.mean(1))


def test_k_larger_than_n_is_clamped() -> None:
    vectors, queries, ids = _data(n=4)
    for backend in ("exact", "faiss"):
        scores, rows = PassageIndex(vectors, ids, "cosine", backend).search(queries, k=10)
        assert scores.shape == rows.shape == (5, 4)


def test_build_errors() -> None:
    vectors, _, ids = _data(n=5)
    with pytest.raises(ValueError, match="no passages to index"):
        PassageIndex(torch.empty(0, 1, 8), [], "dot")
    with pytest.raises(ValueError, match=r"\(N >= 1, R, D\)"):
        PassageIndex(torch.ones(5, 8), ids, "dot")
    with pytest.raises(ValueError, match="5 vectors but 4 passage_ids"):
        PassageIndex(vectors, ids[:4], "dot")
    with pytest.raises(ValueError, match="duplicate passage ids"):
        PassageIndex(vectors, ["a", "a", "b", "c", "d"], "dot")
    bad = vectors.clone()
    bad[3, 0, 1] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite values in the vectors of rows \[3\]"):
        PassageIndex(bad, ids, "dot")
    with pytest.raises(ValueError, match="unknown"):
        PassageIndex(vectors, ids, "l2")
    with pytest.raises(ValueError, match="backend"):
        PassageIndex(vectors, ids, "dot", backend="annoy")


def test_search_errors() -> None:
    vectors, queries, ids = _data()
    index = PassageIndex(vectors, ids, "flat_cosine")
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(queries, 0)
    with pytest.raises(ValueError, match=r"queries must be \(B, R, 8\)"):
        index.search(torch.randn(2, 3, 7), 2)


@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_save_load_round_trip(tmp_path, backend: str) -> None:
    vectors, queries, ids = _data()
    index = PassageIndex(vectors, ids, "flat_cosine", backend, step=42)
    target = index.save(tmp_path / "idx")
    loaded = PassageIndex.load(target)
    assert loaded.passage_ids == ids and loaded.step == 42 and loaded.backend == backend
    assert loaded.similarity == "flat_cosine" and loaded.device == torch.device("cpu")
    a, b = index.search(queries, 5), loaded.search(queries, 5)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])


def test_save_replaces_an_index_and_refuses_other_folders(tmp_path) -> None:
    vectors, _, ids = _data(n=5)
    target = tmp_path / "idx"
    PassageIndex(vectors, ids, "dot", step=1).save(target)
    PassageIndex(vectors[:3], ids[:3], "dot", step=2).save(target)
    loaded = PassageIndex.load(target)
    assert loaded.step == 2 and len(loaded) == 3
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an index folder"):
        PassageIndex(vectors, ids, "dot").save(other)


def test_failed_save_leaves_the_previous_index(tmp_path, monkeypatch) -> None:
    vectors, _, ids = _data(n=5)
    target = tmp_path / "idx"
    PassageIndex(vectors, ids, "dot", step=1).save(target)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(index_mod, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        PassageIndex(vectors[:2], ids[:2], "dot", step=9).save(target)
    assert PassageIndex.load(target).step == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temporary folder left


def test_load_validation(tmp_path) -> None:
    import shutil

    vectors, _, ids = _data(n=5)
    good = PassageIndex(vectors, ids, "dot").save(tmp_path / "good")

    def damaged(name: str):
        folder = tmp_path / name
        shutil.copytree(good, folder)
        return folder

    with pytest.raises(IndexFormatError, match="not an index folder"):
        PassageIndex.load(tmp_path / "missing")
    folder = damaged("no_meta")
    (folder / "meta.json").unlink()
    with pytest.raises(IndexFormatError, match="meta.json is missing"):
        PassageIndex.load(folder)
    folder = damaged("old")  # format 1 (faiss file) from an earlier joint-rag
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(IndexFormatError, match="format_version 1 is not 2; rebuild"):
        PassageIndex.load(folder)
    folder = damaged("truncated")
    data = (folder / "vectors.safetensors").read_bytes()
    (folder / "vectors.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match="unreadable"):
        PassageIndex.load(folder)
    folder = damaged("ids")
    (folder / "passage_ids.json").write_text(json.dumps(ids[:3]))
    with pytest.raises(IndexFormatError, match="3 ids"):
        PassageIndex.load(folder)
    folder = damaged("foreign")
    (folder / "vectors.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(IndexFormatError, match="unreadable"):
        PassageIndex.load(folder)


def test_an_index_knows_what_built_it(tmp_path) -> None:
    vectors, _, ids = _data(n=5)
    built = {"encoder": "sha256:aaaa", "corpus": "sha256:cccc"}
    target = PassageIndex(vectors, ids, "cosine", fingerprint=built).save(tmp_path / "idx")
    loaded = PassageIndex.load(target, expect=built, similarity="cosine")
    assert loaded.fingerprint == built
    with pytest.raises(
        IndexFormatError, match="built with encoder sha256:aaaa, but this encoder is sha256:bbbb"
    ):
        PassageIndex.load(target, expect={"encoder": "sha256:bbbb"})
    with pytest.raises(
        IndexFormatError, match="built with corpus sha256:cccc, but this corpus is sha256:dddd"
    ):
        PassageIndex.load(target, expect={"corpus": "sha256:dddd"})
    with pytest.raises(IndexFormatError, match="built for similarity 'cosine', expected 'dot'"):
        PassageIndex.load(target, similarity="dot")
    bare = PassageIndex(vectors, ids, "cosine").save(tmp_path / "bare")
    with pytest.raises(IndexFormatError, match=r"built with encoder \(no fingerprint\)"):
        PassageIndex.load(bare, expect={"encoder": "sha256:aaaa"})


@pytest.mark.parametrize("backend", ["exact", "faiss", "faiss_ivf", "faiss_hnsw"])
def test_update_rows_searches_like_an_index_built_from_the_new_vectors(backend: str) -> None:
    """A rolling refresh's update: the updated index finds what a rebuild over the same vectors
    finds (IVF removes and re-adds the rows; flat and HNSW are refilled)."""
    vectors, queries, ids = _data(n=400, r=2, d=8, b=6)
    params = {"nlist": 4, "nprobe": 4} if backend == "faiss_ivf" else None
    index = PassageIndex(vectors, ids, "flat_cosine", backend, params=params)
    rows = torch.randperm(400, generator=torch.Generator().manual_seed(1))[:90]
    new = torch.randn(90, 2, 8)
    updated = vectors.clone()
    updated[rows] = new
    index.update(rows, new, step=3)
    want = PassageIndex(updated, ids, "flat_cosine", "exact").search(queries, 10)[1]
    assert torch.equal(index.search(queries, 10)[1], want)
    assert index.row_steps[rows].eq(3).all() and int(index.row_steps.sum()) == 3 * 90
    assert index.step == 0 and index.ages(rows[:2], 5).tolist() == [2.0, 2.0]
    if index._faiss is not None:
        assert index._faiss.ntotal == 400
    with pytest.raises(ValueError, match="distinct"):
        index.update(torch.tensor([1, 1]), new[:2], 4)
    with pytest.raises(ValueError, match="after pooling"):
        index.update(rows[:2], torch.randn(2, 3, 8), 4)
