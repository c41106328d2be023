"""One entry point for similarity + top-k: picks the Triton kernel or the torch path.

The selection (which passages) is not differentiable; the scores are. When an input requires
grad, the indices come from the fast path under no_grad and the scores of the selected rows are
recomputed in fp32 from the gathered rows::

    scores = similarity(queries, passages[indices], similarity)   # (B, k), per-query candidates

so gradients reach the queries and only the selected passage rows (through index_select's
backward), never a dense (B, N) score matrix.

CUDA searches (``auto`` or ``triton``) take one of two paths, ``dense_topk`` (one cuBLAS matmul
with fp32 output, then ``torch.topk``; extra memory B*N*4 bytes) or the fused kernel (extra memory
O(B*k)), chosen by ``cuda_path``:

- on a GPU with a measured table (``measured.py``: the H200 sweep), the path that was faster at
  the nearest benchmarked shape, if the dense scores fit the dense budget: 25% of the device's
  memory, or $JOINT_RAG_DENSE_CAP_MIB (0 turns the dense path off);
- elsewhere (other GPUs, fp32, shapes outside the table), dense when B*N*4 bytes <= 64 MiB
  (``DENSE_CAP_BYTES``, or $JOINT_RAG_DENSE_CAP_MIB): small searches, where the kernel's launch,
  host sync and second pass dominate (H200: 0.12 vs 0.32 ms at B = 1, N = 1e5, d = 768).

MaxSim always takes the kernel. So the O(B*k) memory promise holds on the kernel path; on the
dense path the extra memory is the B*N*4-byte score matrix, within the budget above.
``last_path`` says which path the latest call took.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from .reference import check_inputs, check_similarity, pool, similarity_topk_torch
from .reference import similarity as dense_similarity

BACKENDS = ("auto", "torch", "triton")
BACKEND_ENV = "JOINT_RAG_SIMILARITY_BACKEND"
DENSE_CAP_ENV = "JOINT_RAG_DENSE_CAP_MIB"
DENSE_CAP_BYTES = 64 * 2**20  # no measured table: dense fp32 scores up to this take the dense path
DENSE_MEMORY_FRACTION = 0.25  # measured table: dense scores up to this share of the device memory
last_path = ""  # "dense", "triton" or "torch": the path of the latest similarity_topk call


def dense_cap_bytes(default: int = DENSE_CAP_BYTES) -> int:
    """$JOINT_RAG_DENSE_CAP_MIB (0 turns the dense path off), else ``default``."""
    env = os.environ.get(DENSE_CAP_ENV)
    return int(float(env) * 2**20) if env not in (None, "") else default


_DEVICE: dict[int, tuple[str, int]] = {}


def _device_info(device: torch.device) -> tuple[str, int]:
    """(name, total memory in bytes) of a CUDA device, cached (no driver call per search)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _DEVICE:
        props = torch.cuda.get_device_properties(index)
        _DEVICE[index] = (props.name, props.total_memory)
    return _DEVICE[index]


_MM_OUT_DTYPE: dict[torch.dtype, bool] = {}


def _mm_fp32_ok(dtype: torch.dtype) -> bool:
    """Whether ``torch.mm(a, b, out_dtype=torch.float32)`` runs for CUDA ``dtype`` inputs (fp32
    accumulation and output without an fp32 copy of the passages); checked once per dtype."""
    if dtype == torch.float32:
        return True
    if dtype not in _MM_OUT_DTYPE:
        try:
            x = torch.ones(16, 16, dtype=dtype, device="cuda")
            _MM_OUT_DTYPE[dtype] = torch.mm(x, x, out_dtype=torch.float32).dtype == torch.float32
        except (TypeError, RuntimeError, NotImplementedError):
            _MM_OUT_DTYPE[dtype] = False
    return _MM_OUT_DTYPE[dtype]


def path_for(
    B: int, N: int, D: int, k: int, dtype: torch.dtype, similarity: str, device_name: str, total_memory: int
) -> str:
    """The dispatch rule (pure): ``dense`` or ``triton`` for a CUDA search of B queries against N
    D-dimensional passages on a device with this name and memory (see the module docstring)."""
    from .measured import measured_path

    if similarity == "maxsim":
        return "triton"
    choice = measured_path(device_name, B, N, D, k, dtype)
    scores_bytes = 4 * B * N
    if choice is None:  # no table for this device, dtype or shape: small searches go dense
        return "dense" if scores_bytes <= dense_cap_bytes() else "triton"
    fits = scores_bytes <= dense_cap_bytes(int(DENSE_MEMORY_FRACTION * total_memory))
    return "dense" if choice == "dense" and fits else "triton"


def cuda_path(queries: Tensor, passages: Tensor, k: int, similarity: str) -> str:
    """``path_for`` this search; CPU tensors and dtypes without an fp32-output matmul: ``triton``."""
    if not queries.is_cuda or similarity == "maxsim" or not _mm_fp32_ok(passages.dtype):
        return "triton"
    name, total = _device_info(queries.device)
    D = passages[0].numel()  # flat_cosine scores M*D-dimensional vectors
    return path_for(queries.shape[0], passages.shape[0], D, k, passages.dtype, similarity, name, total)


def dense_fits(queries: Tensor, passages: Tensor, similarity: str, k: int = 10) -> bool:
    """Whether ``similarity_topk`` takes ``dense_topk`` for this search (``cuda_path``)."""
    return cuda_path(queries, passages, k, similarity) == "dense"


def dense_topk(queries: Tensor, passages: Tensor, k: int, similarity: str) -> tuple[Tensor, Tensor]:
    """Top-k of the dense fp32 score matrix (small searches, dot/cosine/flat_cosine): one matmul
    with fp32 accumulation and output (16-bit scores are not rounded to 16 bits, so the ranking
    is the kernel's up to summation order), then ``torch.topk``.

    Returns:
        scores (B, min(k, N)) fp32 sorted descending, indices int64; equal scores in
        ``torch.topk``'s order (not necessarily the smaller index first).
    """
    k = min(k, passages.shape[0])
    q, p = queries.to(passages.dtype), passages
    if similarity == "flat_cosine":
        q, p = q.flatten(1), p.flatten(1)  # (B, M*D), (N, M*D)
    if p.dtype == torch.float32:
        s = q @ p.T  # (B, N)
    else:
        s = torch.mm(q, p.T, out_dtype=torch.float32)  # (B, N) fp32
    if similarity != "dot":  # F.normalize's formula, applied to the fp32 scores
        inv_q = torch.linalg.vector_norm(q, dim=-1, dtype=torch.float32).clamp_min(1e-12).reciprocal()
        inv_p = torch.linalg.vector_norm(p, dim=-1, dtype=torch.float32).clamp_min(1e-12).reciprocal()
        s = s.mul_(inv_q[:, None]).mul_(inv_p[None, :])
    return s.topk(k, dim=1)


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(queries: Tensor, k: int, backend: str | None = None) -> str:
    """``backend`` argument, else $JOINT_RAG_SIMILARITY_BACKEND, else ``auto``: Triton for CUDA
    tensors when triton is installed and k is within the kernel's limit, torch otherwise (also
    for CPU tensors under TRITON_INTERPRET=1: the interpreter is for tests, ask for it by name)."""
    from .launcher import MAX_K

    choice = backend or os.environ.get(BACKEND_ENV) or "auto"
    if choice not in BACKENDS:
        raise ValueError(
            f"backend={choice!r} (argument or ${BACKEND_ENV}) is unknown; choose one of {BACKENDS}"
        )
    if choice != "auto":
        return choice
    return "triton" if queries.is_cuda and k <= MAX_K and _triton_available() else "torch"


def similarity_topk(
    queries: Tensor,
    passages: Tensor,
    k: int,
    similarity: str = "dot",
    *,
    backend: str | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-k passages per query by similarity, without materialising the (B, N) scores.

    Args:
        queries: (B, R, D) retrieval vectors, or (B, D) for ``dot``/``cosine`` (see
            ``reference``: dot and cosine score the mean vectors).
        passages: (N, R', D), or (N, D) for ``dot``/``cosine``, on the same device; fp32, fp16
            or bf16 (fp32 accumulation).
        k: passages per query (>= 1); k > N returns all N.
        similarity: ``dot``, ``cosine`` (of the mean vectors), ``flat_cosine`` (cosine of the
            flattened R*D vectors, CLaRa) or ``maxsim`` (ColBERT: sum over query vectors of the
            max dot over passage vectors).
        backend: ``auto`` (Triton on CUDA, torch otherwise), ``torch`` or ``triton``; default
            from $JOINT_RAG_SIMILARITY_BACKEND, else ``auto``. On CUDA, ``cuda_path`` picks
            ``dense_topk`` or the kernel (a measured table on the H200, else dense up to 64 MiB).
        chunk_size: passages per chunk on the torch path.

    Returns:
        scores (B, min(k, N)) fp32, sorted descending; indices (B, min(k, N)) int64 into passages.
        Scores are differentiable w.r.t. queries and passages when either requires grad.
    """
    global last_path
    check_similarity(similarity)
    queries, passages = pool(queries, passages, similarity)
    check_inputs(queries, passages, k, similarity)
    chosen = resolve_backend(queries, k, backend)
    with torch.no_grad():
        if chosen == "triton" and cuda_path(queries, passages, k, similarity) == "dense":
            last_path = "dense"
            scores, indices = dense_topk(queries, passages, k, similarity)
        elif chosen == "triton":
            from .launcher import similarity_topk_triton

            last_path = "triton"
            scores, indices = similarity_topk_triton(queries, passages, k, similarity)
        else:
            last_path = "torch"
            scores, indices = similarity_topk_torch(queries, passages, k, similarity, chunk_size=chunk_size)
    if torch.is_grad_enabled() and (queries.requires_grad or passages.requires_grad):
        scores = rescore(queries, passages, indices, similarity)
    return scores, indices


def rescore(queries: Tensor, passages: Tensor, indices: Tensor, similarity: str = "dot") -> Tensor:
    """Differentiable fp32 scores of selected passages.

    Args:
        queries: (B, R, D), or (B, D) for dot/cosine.
        passages: (N, R', D), or (N, D) for dot/cosine.
        indices: (B, k) int64 rows of passages per query.

    Returns:
        (B, k) fp32 scores, ``similarity(queries, passages[indices])`` per query.
    """
    queries, passages = pool(queries, passages, similarity)
    B, k = indices.shape
    picked = passages.index_select(0, indices.reshape(-1))  # (B*k, D) or (B*k, M', D)
    picked = picked.view(B, k, *passages.shape[1:])  # (B, k, D) or (B, k, M', D)
    return dense_similarity(queries.float(), picked.float(), similarity)  # (B, k)
