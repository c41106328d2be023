"""Flat (exact) index over the retrieval vectors of the whole corpus.

The caller flattens multi-vector memory to one (D,) vector per passage and normalises it when
cosine similarity is wanted; the index only computes inner products (or negative squared L2
distances). Two search backends give the same results: ``"faiss"`` (default; ``IndexFlatIP`` /
``IndexFlatL2`` on CPU or faiss-GPU) and ``"torch"`` (keeps the raw (N, D) vectors and runs
``topk(q @ P.T)`` chunked over N, or an injected ``exact_search``: the kernel in ``joint_rag.kernels``).

On disk an index is a folder: ``index.faiss`` (faiss binary format, never pickle),
``passage_ids.json`` and ``meta.json``. ``step`` records the global step the vectors were
computed at, so callers can measure staleness.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
import torch
from torch import Tensor

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
IDS_FILE = "passage_ids.json"
META_FILE = "meta.json"
METRICS = ("ip", "l2")
BACKENDS = ("faiss", "torch")

Metric = Literal["ip", "l2"]
Backend = Literal["faiss", "torch"]
ExactSearch = Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]]
"""(queries (B, D), passages (N, D), k) -> (scores (B, k), rows (B, k)), sorted descending."""


class IndexFormatError(ValueError):
    """An index folder is missing files or its files disagree. The message names the folder."""


def _as_float32(vectors: Tensor | np.ndarray, what: str) -> np.ndarray:
    """Converts a (rows, D) tensor or array to a C-contiguous float32 numpy array."""
    if isinstance(vectors, Tensor):
        vectors = vectors.detach().to("cpu", torch.float32).numpy()
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D (rows, D), got shape {tuple(array.shape)}")
    return array


def torch_exact_search(
    queries: Tensor, passages: Tensor, k: int, metric: Metric = "ip", chunk_size: int = 65536
) -> tuple[Tensor, Tensor]:
    """Exact top-k by ``torch.topk`` over chunks of the corpus (bounded (B, chunk) memory).

    Args:
        queries: (B, D) query vectors.
        passages: (N, D) passage vectors, same device and dtype as ``queries``.
        k: results per query, 1 <= k <= N.
        metric: "ip" (inner product) or "l2" (score = negative squared L2 distance).
        chunk_size: passages scored at a time.

    Returns:
        scores (B, k) and rows (B, k) long, sorted by descending score.
    """
    best_scores = queries.new_empty(queries.shape[0], 0)  # (B, 0)
    best_rows = torch.empty(queries.shape[0], 0, dtype=torch.long, device=queries.device)
    q_sq = (queries * queries).sum(-1, keepdim=True) if metric == "l2" else None  # (B, 1)
    for start in range(0, passages.shape[0], chunk_size):
        chunk = passages[start : start + chunk_size]  # (n, D)
        scores = queries @ chunk.T  # (B, n)
        if q_sq is not None:
            scores = 2 * scores - q_sq - (chunk * chunk).sum(-1)[None, :]  # -(|q|^2 - 2qp + |p|^2)
        top_scores, top_rows = scores.topk(min(k, chunk.shape[0]), dim=-1)  # (B, k')
        merged_scores = torch.cat([best_scores, top_scores], dim=-1)  # (B, k + k')
        merged_rows = torch.cat([best_rows, top_rows + start], dim=-1)  # (B, k + k')
        best_scores, order = merged_scores.topk(min(k, merged_scores.shape[-1]), dim=-1)  # (B, k)
        best_rows = merged_rows.gather(-1, order)  # (B, k)
    return best_scores, best_rows


class PassageIndex:
    """Exact search over one (D,) vector per passage of the corpus.

    Attributes:
        passage_ids: row -> passage id, length N.
        dim: vector size D.
        metric: "ip" or "l2" (scores are negative squared distances for "l2").
        backend: "faiss" or "torch".
        step: global training step at which the vectors were computed.
        on_gpu: whether search runs on a GPU.
    """

    def __init__(
        self,
        passage_ids: list[str],
        metric: Metric,
        backend: Backend,
        step: int,
        use_gpu: bool,
        exact_search: ExactSearch | None,
        vectors: np.ndarray | None = None,
        faiss_index: faiss.Index | None = None,
    ) -> None:
        """Use :meth:`build` or :meth:`load`. Takes (N, D) ``vectors`` or a CPU ``faiss_index``."""
        self.passage_ids, self.metric, self.backend, self.step = passage_ids, metric, backend, step
        self.on_gpu = use_gpu
        self._exact_search = exact_search
        self._vectors: Tensor | None = None  # (N, D), backend "torch"
        self._faiss_index: faiss.Index | None = None  # backend "faiss"
        if backend == "torch":
            if vectors is None:
                vectors = faiss_index.reconstruct_n(0, faiss_index.ntotal)  # (N, D)
            self._vectors = torch.tensor(vectors, device=_torch_device(use_gpu))  # (N, D), a copy
            self.dim = self._vectors.shape[1]
            return
        if faiss_index is None:
            faiss_index = _new_faiss_index(metric, vectors.shape[1])
            faiss_index.add(vectors)
        self.dim = faiss_index.d
        self._faiss_index = _faiss_to_gpu(faiss_index) if use_gpu else faiss_index

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(
        cls,
        vectors: Tensor | np.ndarray,
        passage_ids: Sequence[str],
        metric: Metric = "ip",
        use_gpu: bool = False,
        backend: Backend = "faiss",
        exact_search: ExactSearch | None = None,
        step: int = 0,
    ) -> PassageIndex:
        """Builds an index from the corpus's retrieval vectors.

        Args:
            vectors: (N, D) float vectors, row i belongs to ``passage_ids[i]``.
            passage_ids: N unique passage ids.
            metric: "ip" (inner product; cosine if the caller normalised) or "l2".
            use_gpu: search on GPU (faiss-GPU for "faiss", CUDA tensors for "torch").
            backend: "faiss" or "torch" (exact ``topk`` over raw vectors).
            exact_search: optional replacement for the torch search (needs backend "torch").
            step: global step at which ``vectors`` were computed.

        Raises:
            ValueError: empty/non-finite/mis-shaped vectors, id problems, bad options.
            RuntimeError: ``use_gpu`` without GPU support.
        """
        _check_options(metric, backend, exact_search)
        array = _as_float32(vectors, "PassageIndex.build: vectors")  # (N, D)
        n = array.shape[0]
        if array.size == 0:
            raise ValueError(f"PassageIndex.build: empty vectors {array.shape}; encode the corpus first")
        ids = [str(p) for p in passage_ids]
        if len(ids) != n:
            raise ValueError(f"PassageIndex.build: {n} vectors but {len(ids)} passage_ids")
        if len(set(ids)) != n:
            dupes = sorted(p for p, c in Counter(ids).items() if c > 1)[:5]
            raise ValueError(f"PassageIndex.build: duplicate passage ids, e.g. {dupes}")
        if not np.isfinite(array).all():
            bad = np.flatnonzero(~np.isfinite(array).all(axis=1))[:5].tolist()
            raise ValueError(f"PassageIndex.build: non-finite values in vector rows {bad}")
        return cls(ids, metric, backend, step, use_gpu, exact_search, vectors=array)

    # ----------------------------------------------------------------- search
    def __len__(self) -> int:
        return len(self.passage_ids)

    @torch.no_grad()
    def search(self, queries: Tensor | np.ndarray, k: int) -> tuple[Tensor, Tensor]:
        """Top-k passages per query. Not differentiable (candidates only).

        Args:
            queries: (B, D) query vectors (same normalisation as the passages).
            k: results per query; clamped to N when larger.

        Returns:
            scores (B, k) float32 and rows (B, k) long, sorted by descending score; rows index
            ``passage_ids``. On the queries' device when ``queries`` is a tensor, else on CPU.
        """
        if k < 1:
            raise ValueError(f"PassageIndex.search: k must be >= 1, got {k}")
        out_device = queries.device if isinstance(queries, Tensor) else torch.device("cpu")
        shape = tuple(queries.shape)
        if len(shape) != 2 or shape[1] != self.dim:
            raise ValueError(
                f"PassageIndex.search: queries must have shape (B, {self.dim}) to match the index, "
                f"got {shape}; encode queries with the model that built the index"
            )
        k = min(k, len(self))
        if self.backend == "torch":
            assert self._vectors is not None
            q = torch.as_tensor(queries).to(self._vectors.device, torch.float32)  # (B, D)
            search_fn = self._exact_search or self._default_exact_search
            scores, rows = search_fn(q, self._vectors, k)  # (B, k), (B, k)
        else:
            assert self._faiss_index is not None
            q_np = _as_float32(queries, "PassageIndex.search: queries")  # (B, D)
            dist, idx = self._faiss_index.search(q_np, k)  # (B, k), (B, k)
            scores = torch.from_numpy(-dist if self.metric == "l2" else dist)
            rows = torch.from_numpy(idx)
        return scores.to(out_device, torch.float32), rows.to(out_device, torch.long)

    def _default_exact_search(self, q: Tensor, p: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Inner product goes through the fused kernel's dispatch (Triton on CUDA, chunked torch
        elsewhere); l2 uses the chunked torch search."""
        if self.metric == "ip":
            from joint_rag.kernels import similarity_topk

            return similarity_topk(q, p, k, "dot")
        return torch_exact_search(q, p, k, self.metric)

    def ids_for(self, rows: Tensor | np.ndarray | Sequence[int] | int) -> list[list[str]] | list[str] | str:
        """Maps search rows to passage ids.

        Args:
            rows: an int, (k,) rows or (B, k) rows.

        Returns:
            one id, a list of k ids, or B lists of k ids (matching the input's nesting).
        """
        if isinstance(rows, Tensor | np.ndarray | np.integer):
            rows = rows.tolist()
        if isinstance(rows, int):
            if not 0 <= rows < len(self):
                raise IndexError(f"PassageIndex.ids_for: row {rows} out of range [0, {len(self)})")
            return self.passage_ids[rows]
        return [self.ids_for(r) for r in rows]  # type: ignore[misc]

    # ----------------------------------------------------------------- save / load
    def save(self, directory: str | os.PathLike) -> Path:
        """Writes ``index.faiss``, ``passage_ids.json`` and ``meta.json`` atomically.

        Files are written to a temporary folder next to ``directory`` and renamed into place,
        so a failed save leaves any previous index untouched and nothing half-written.

        Args:
            directory: target folder; must not exist, be empty, or hold an index.

        Returns:
            the target folder.
        """
        target = Path(directory)
        is_index_or_empty = target.is_dir() and ((target / META_FILE).exists() or not any(target.iterdir()))
        if target.exists() and not is_index_or_empty:
            raise FileExistsError(
                f"PassageIndex.save: {target} exists and is not an index folder; choose another path"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            faiss.write_index(self._cpu_faiss_index(), str(tmp / INDEX_FILE))
            (tmp / IDS_FILE).write_text(json.dumps(self.passage_ids))
            meta = {
                "format_version": FORMAT_VERSION,
                "dim": self.dim,
                "metric": self.metric,
                "count": len(self),
                "built_at_step": self.step,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
            _replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        use_gpu: bool = False,
        backend: Backend = "faiss",
        exact_search: ExactSearch | None = None,
    ) -> PassageIndex:
        """Loads and validates an index folder written by :meth:`save`.

        Args:
            directory: the folder.
            use_gpu, backend, exact_search: as in :meth:`build`.

        Raises:
            IndexFormatError: missing files, unreadable files, or files that disagree.
        """
        folder = Path(directory)

        def fail(problem: str) -> IndexFormatError:
            return IndexFormatError(f"PassageIndex.load: {folder}: {problem}")

        if not folder.is_dir():
            raise fail("not a folder; build an index and save it there first")
        missing = [f for f in (INDEX_FILE, IDS_FILE, META_FILE) if not (folder / f).is_file()]
        if missing:
            raise fail(f"missing {', '.join(missing)}; the folder is not a complete index")
        try:
            meta = json.loads((folder / META_FILE).read_text())
            ids = json.loads((folder / IDS_FILE).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise fail(f"unreadable json: {err}") from err
        need = ("format_version", "dim", "metric", "count", "built_at_step")
        if not isinstance(meta, dict) or any(key not in meta for key in need):
            raise fail(f"{META_FILE} must hold the keys {list(need)}")
        if meta["format_version"] != FORMAT_VERSION:
            raise fail(f"format_version {meta['format_version']} is not supported, expected {FORMAT_VERSION}")
        if meta["metric"] not in METRICS:
            raise fail(f"{META_FILE}: metric {meta['metric']!r} is not one of {METRICS}")
        if not isinstance(ids, list) or not all(isinstance(p, str) for p in ids):
            raise fail(f"{IDS_FILE} must be a json list of strings")
        try:
            faiss_index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError as err:
            raise fail(f"{INDEX_FILE} is not a readable faiss index: {err}") from err
        expected_type = _new_faiss_index(meta["metric"], 1).metric_type
        problems = []
        if faiss_index.ntotal != len(ids):
            problems.append(f"{INDEX_FILE} holds {faiss_index.ntotal} vectors but {IDS_FILE} {len(ids)} ids")
        if meta["count"] != len(ids):
            problems.append(f"{META_FILE} count {meta['count']} != {len(ids)} ids")
        if faiss_index.d != meta["dim"]:
            problems.append(f"{INDEX_FILE} dim {faiss_index.d} != {META_FILE} dim {meta['dim']}")
        if faiss_index.metric_type != expected_type:
            problems.append(f"{INDEX_FILE} metric type does not match {META_FILE} metric {meta['metric']!r}")
        if problems:
            raise fail("; ".join(problems) + "; rebuild the index")
        _check_options(meta["metric"], backend, exact_search)
        step = int(meta["built_at_step"])
        return cls(ids, meta["metric"], backend, step, use_gpu, exact_search, faiss_index=faiss_index)

    def _cpu_faiss_index(self) -> faiss.Index:
        """A CPU faiss index holding the vectors (for writing)."""
        if self._faiss_index is None:
            assert self._vectors is not None
            index = _new_faiss_index(self.metric, self.dim)
            index.add(_as_float32(self._vectors, "vectors"))
            return index
        return faiss.index_gpu_to_cpu(self._faiss_index) if self.on_gpu else self._faiss_index

    def __repr__(self) -> str:
        fields = f"N={len(self)}, dim={self.dim}, metric={self.metric!r}, backend={self.backend!r}"
        return f"PassageIndex({fields}, on_gpu={self.on_gpu}, step={self.step})"


def _check_options(metric: str, backend: str, exact_search: ExactSearch | None) -> None:
    problems = []
    if metric not in METRICS:
        problems.append(f"metric must be one of {METRICS}, got {metric!r}")
    if backend not in BACKENDS:
        problems.append(f"backend must be one of {BACKENDS}, got {backend!r}")
    if exact_search is not None and backend != "torch":
        problems.append("exact_search replaces the torch search: pass backend='torch' with it")
    if problems:
        raise ValueError("PassageIndex: " + "; ".join(problems))


def _new_faiss_index(metric: str, dim: int) -> faiss.Index:
    return faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)


def _faiss_num_gpus() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _faiss_to_gpu(index: faiss.Index) -> faiss.Index:
    if _faiss_num_gpus() == 0 or not hasattr(faiss, "StandardGpuResources"):
        raise RuntimeError(
            "PassageIndex: use_gpu=True but this faiss build has no GPU support (faiss.get_num_gpus() == 0); "
            "install faiss-gpu-cu12 (pip install joint-rag[gpu]), or use backend='torch' or use_gpu=False"
        )
    resources = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
    gpu_index.referenced_resources = resources  # keep alive with the index
    return gpu_index


def _torch_device(use_gpu: bool) -> torch.device:
    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("PassageIndex: use_gpu=True with backend='torch' but torch sees no CUDA device")
    return torch.device("cuda")


def _replace_dir(tmp: Path, target: Path) -> None:
    """Renames ``tmp`` to ``target``, replacing an existing ``target`` with a rollback on failure."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / target.name)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old / target.name, target)  # roll back to the previous index
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
