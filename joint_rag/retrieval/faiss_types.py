"""The faiss index types of ``PassageIndex``: flat, IVF-Flat, IVF-PQ and HNSW over inner products.

Chosen in YAML with ``model.index_backend`` and tuned with ``model.index_params``:

| backend        | faiss index                      | parameters (default from N, the corpus size)      |
|----------------|----------------------------------|----------------------------------------------------|
| ``faiss``      | ``IndexFlatIP`` (exact)          | -                                                  |
| ``faiss_ivf``  | ``IndexIVFFlat``                 | nlist (4 sqrt N, at most N / 39), nprobe (nlist / 8) |
| ``faiss_ivfpq``| ``IndexIVFPQ``                   | nlist, nprobe as above; pq_m (the largest divisor of D' up to min(96, D' / 2)), pq_bits (8, fewer when N is small) |
| ``faiss_hnsw`` | ``IndexHNSWFlat``                | hnsw_m (32), ef_search (128), ef_construction (80) |

IVF quantizers (and PQ codebooks) are trained on a random sample of ``train_size`` vectors
(default min(N, 64 * nlist), at least 39 per centroid; seeded). ``use_gpu``: null (default)
puts the index on the GPU when the vectors are on CUDA and this faiss build has GPUs; true
requires that; false keeps it on the CPU. Vectors are added in chunks under a progress bar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from joint_rag.progress import progress_bar

FAISS_BACKENDS = ("faiss", "faiss_ivf", "faiss_ivfpq", "faiss_hnsw")
PARAMS = (
    "nlist",
    "nprobe",
    "pq_m",
    "pq_bits",
    "hnsw_m",
    "ef_search",
    "ef_construction",
    "train_size",
    "use_gpu",
    "seed",
)
ADD_CHUNK = 65536
_gpu_resources = None  # one faiss StandardGpuResources per process, shared by every GPU index


@dataclass
class FaissParams:
    """Resolved parameters of one faiss index type (``resolve`` fills the defaults from N, D)."""

    nlist: int | None = None
    nprobe: int | None = None
    pq_m: int | None = None
    pq_bits: int | None = None
    hnsw_m: int = 32
    ef_search: int = 128
    ef_construction: int = 80
    train_size: int | None = None
    use_gpu: bool | None = None
    seed: int = 0

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in PARAMS}


def resolve(backend: str, params: dict | None, n: int, dim: int) -> FaissParams:
    """Validated parameters with the defaults chosen from N and D' (one ValueError saying what to
    change); the keys were checked by ``index.check_index_options``."""
    params = dict(params or {})
    p = FaissParams(**params)
    if backend in ("faiss_ivf", "faiss_ivfpq"):
        max_lists = max(1, n // 39)  # faiss wants >= 39 training points per centroid
        p.nlist = p.nlist or max(1, min(max_lists, int(4 * math.sqrt(n))))
        if not 1 <= p.nlist <= n:
            raise ValueError(f"index_params.nlist={p.nlist} must lie in [1, N={n}] (the corpus size)")
        p.nprobe = p.nprobe or max(1, p.nlist // 8)
        if not 1 <= p.nprobe <= p.nlist:
            raise ValueError(f"index_params.nprobe={p.nprobe} must lie in [1, nlist={p.nlist}]; lower nprobe")
        p.train_size = min(n, p.train_size or max(64 * p.nlist, 39 * p.nlist))
    if backend == "faiss_ivfpq":
        if p.pq_m is None:
            p.pq_m = max(m for m in range(1, max(1, min(96, dim // 2)) + 1) if dim % m == 0)
        if dim % p.pq_m:
            raise ValueError(f"index_params.pq_m={p.pq_m} must divide the vector dimension {dim}")
        if p.pq_bits is None:
            p.pq_bits = max(1, min(8, int(math.log2(max(2, n // 39)))))
        if not 1 <= p.pq_bits <= 16:
            raise ValueError(f"index_params.pq_bits={p.pq_bits} must lie in [1, 16]")
        p.train_size = min(n, max(p.train_size, 39 * 2**p.pq_bits))
    if backend == "faiss_hnsw" and (p.hnsw_m < 2 or p.ef_search < 1 or p.ef_construction < 1):
        raise ValueError("index_params: hnsw_m must be >= 2, ef_search and ef_construction >= 1")
    return p


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def build(backend: str, vectors: np.ndarray, params: FaissParams, on_cuda: bool, show_progress: bool = True):
    """A trained, filled faiss index over (N, D') float32 ``vectors`` (inner product)."""
    import faiss

    n, dim = vectors.shape
    ip = faiss.METRIC_INNER_PRODUCT
    if backend == "faiss":
        index = faiss.IndexFlatIP(dim)
    elif backend == "faiss_hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, ip)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
    else:
        quantizer = faiss.IndexFlatIP(dim)
        if backend == "faiss_ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, params.nlist, ip)
        else:
            index = faiss.IndexIVFPQ(quantizer, dim, params.nlist, params.pq_m, params.pq_bits, ip)
        index.cp.seed = params.seed
        rows = np.random.default_rng(params.seed).choice(n, size=params.train_size, replace=False)
        index.train(np.ascontiguousarray(vectors[np.sort(rows)]))
        index.nprobe = params.nprobe
    use_gpu = on_cuda if params.use_gpu is None else params.use_gpu
    if use_gpu and not gpu_available():
        if params.use_gpu:
            raise ValueError(
                "index_params.use_gpu: true but this faiss has no GPU support: install the gpu extra "
                "(pip install joint-rag[gpu]) or set use_gpu: false"
            )
        use_gpu = False
    if use_gpu and backend != "faiss_hnsw":  # faiss has no GPU HNSW
        global _gpu_resources
        if _gpu_resources is None:  # reused across refreshes (each one reserves GPU scratch memory)
            _gpu_resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(_gpu_resources, 0, index)
    with progress_bar(f"building {backend} index", n, show_progress) as advance:
        for start in range(0, n, ADD_CHUNK):
            chunk = vectors[start : start + ADD_CHUNK]
            index.add(np.ascontiguousarray(chunk))
            advance(len(chunk))
    return index


def update(index, backend: str, rows: np.ndarray, vectors: np.ndarray, all_vectors) -> None:
    """Give ``rows`` (n,) their new (n, D') ``vectors`` in a built index. CPU IVF types remove
    and re-add those ids (quantizer kept); other types (flat, HNSW, GPU) are emptied and refilled
    from ``all_vectors()`` (the whole (N, D') array, already updated)."""
    import faiss

    if backend in ("faiss_ivf", "faiss_ivfpq") and "Gpu" not in type(index).__name__:
        ids = rows.astype(np.int64)
        index.remove_ids(faiss.IDSelectorBatch(ids))
        index.add_with_ids(np.ascontiguousarray(vectors), ids)
        return
    index.reset()  # keeps a trained quantizer; HNSW rebuilds its graph on add
    full = all_vectors()
    for start in range(0, len(full), ADD_CHUNK):
        index.add(np.ascontiguousarray(full[start : start + ADD_CHUNK]))


def search(
    index, backend: str, params: FaissParams, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(B, k) scores and rows. An IVF search that finds fewer than k passages for a query (its
    nprobe lists hold too few) is repeated for that query over every list, so every row is valid."""
    scores, rows = index.search(queries, k)
    short = np.flatnonzero((rows < 0).any(axis=1))
    if len(short) and backend in ("faiss_ivf", "faiss_ivfpq"):
        index.nprobe = params.nlist
        try:
            scores[short], rows[short] = index.search(np.ascontiguousarray(queries[short]), k)
        finally:
            index.nprobe = params.nprobe
    return scores, rows


def serialize(index) -> np.ndarray:
    """The index as bytes (uint8), a GPU index through its CPU copy (``deserialize`` undoes it)."""
    import faiss

    if "Gpu" in type(index).__name__:
        index = faiss.index_gpu_to_cpu(index)
    return faiss.serialize_index(index)


def deserialize(data: np.ndarray, backend: str, params: FaissParams, on_cuda: bool):
    """An index from ``serialize``'s bytes, moved to the GPU as ``build`` would."""
    import faiss

    index = faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
    use_gpu = (on_cuda if params.use_gpu is None else params.use_gpu) and gpu_available()
    if use_gpu and backend != "faiss_hnsw":
        global _gpu_resources
        if _gpu_resources is None:
            _gpu_resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(_gpu_resources, 0, index)
    return index
