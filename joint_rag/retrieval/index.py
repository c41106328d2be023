"""The passage index: the retrieval vectors of the whole corpus, searched by the configured
similarity (the one vocabulary of ``joint_rag.kernels``).

Backends, chosen in YAML (``model.index_backend``, parameters in ``model.index_params``):

- ``exact`` (default): the vectors stay on the device they were encoded on, (N, R, D), or their
  mean (N, 1, D) for ``dot``/``cosine``, and every search is
  ``joint_rag.kernels.similarity_topk``: the Triton kernel for CUDA tensors, the chunked torch
  path on the CPU. Exact for every similarity, MaxSim included.
- ``faiss`` (flat, exact), ``faiss_ivf``, ``faiss_ivfpq``, ``faiss_hnsw`` (approximate): one
  vector per passage whose inner product is the score (``flat_vectors``) in a faiss index of
  that type (``retrieval/faiss_types.py``: parameters and their defaults from N, quantizer
  training on a sample): faiss-GPU when the vectors are on CUDA and this faiss build has GPUs,
  CPU faiss otherwise. MaxSim has no such vector and is refused.

On disk an index is a folder: ``vectors.safetensors`` (the stored vectors), ``passage_ids.json``
and ``meta.json`` (format, similarity, backend, shape, the step the vectors were computed at, and
the fingerprints of what built it: the passage encoder's weights and the corpus). ``load`` with
``expect=`` refuses an index built by another encoder or over another corpus, and ``similarity=``
one built for another similarity, in one line naming both fingerprints. Saved through
``joint_rag.atomic``: nothing half-written.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor

from joint_rag.atomic import atomic_dir
from joint_rag.errors import IndexFormatError
from joint_rag.kernels import check_similarity, similarity_topk
from joint_rag.retrieval import faiss_types

FORMAT_VERSION = 2
VECTORS_FILE = "vectors.safetensors"
IDS_FILE = "passage_ids.json"
META_FILE = "meta.json"
BACKENDS = ("exact", *faiss_types.FAISS_BACKENDS)


def check_index_options(backend: str, similarity: str, params: dict | None = None) -> None:
    """One ValueError for an index that cannot be built: unknown similarity or backend, maxsim
    on faiss, parameters for the exact backend or unknown to the faiss ones (values that depend
    on N, such as nprobe <= nlist, are checked when the index is built)."""
    check_similarity(similarity)
    if backend not in BACKENDS:
        raise ValueError(f"index backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "exact" and similarity == "maxsim":
        raise ValueError(
            "similarity 'maxsim' has no single-vector form for faiss: use index_backend: exact "
            "(exact MaxSim through joint_rag.kernels)"
        )
    if params and backend == "exact":
        raise ValueError(f"index_params {sorted(params)} apply to the faiss backends, not to 'exact'")
    unknown = sorted(set(params or {}) - set(faiss_types.PARAMS))
    if unknown:
        raise ValueError(f"index_params: unknown keys {unknown}; known: {list(faiss_types.PARAMS)}")


def writable(t: Tensor) -> Tensor:
    """``t``, or a copy of it when it was made under ``torch.inference_mode`` (Lightning's
    validate and test), which cannot be written in place outside that mode."""
    return t.clone() if t.is_inference() else t


def stored_vectors(retrieval: Tensor, similarity: str) -> Tensor:
    """(N, R, D) retrieval vectors -> what the exact index keeps: the mean (N, 1, D) for dot and
    cosine (they score mean vectors), the vectors themselves otherwise."""
    return retrieval.mean(dim=1, keepdim=True) if similarity in ("dot", "cosine") else retrieval


def flat_vectors(x: Tensor, similarity: str) -> Tensor:
    """(n, R, D) -> (n, D') float32 vectors whose inner product is ``similarity`` (faiss backend).

    Raises:
        ValueError: for ``maxsim``, which no single inner product expresses.
    """
    x = x.float()
    if similarity == "flat_cosine":
        return F.normalize(x.flatten(1), dim=-1)  # (n, R*D)
    if similarity == "cosine":
        return F.normalize(x.mean(1), dim=-1)  # (n, D)
    if similarity == "dot":
        return x.mean(1)  # (n, D)
    raise ValueError(
        "similarity 'maxsim' has no single-vector form for faiss: use index_backend: exact "
        "(exact MaxSim through joint_rag.kernels)"
    )


class PassageIndex:
    """Top-k search over the corpus by one similarity.

    Attributes:
        passage_ids: row -> passage id, length N.
        similarity: one of ``joint_rag.kernels.SIMILARITIES``.
        backend: one of ``BACKENDS``.
        params: the resolved faiss parameters (``faiss_types.FaissParams``), None for exact.
        step: global training step of the oldest rows' vectors (the build, for a blocking
            refresh; the least recently re-encoded rows under a rolling one).
        row_steps: (N,) long on the CPU: the step each row's vector was computed at.
        vectors: (N, R, D) stored vectors (see ``stored_vectors``) on their device.
    """

    def __init__(
        self,
        vectors: Tensor,
        passage_ids: Sequence[str],
        similarity: str,
        backend: str = "exact",
        step: int = 0,
        fingerprint: dict[str, str] | None = None,
        params: dict | None = None,
        show_progress: bool = False,
    ) -> None:
        """Build an index from (N, R, D) retrieval vectors (row i is ``passage_ids[i]``).

        ``fingerprint`` records what built the vectors, e.g. ``{"encoder": ..., "corpus": ...}``
        (``models.saving.weights_fingerprint``, ``Corpus.fingerprint``); it is saved with the index.
        ``params`` tune the faiss types (``faiss_types.PARAMS``; defaults from N); the exact
        backend takes none.

        Raises:
            ValueError: empty, mis-shaped or non-finite vectors, id problems, bad options.
        """
        check_index_options(backend, similarity, params)
        if vectors.dim() == 3 and vectors.shape[0] == 0:
            raise ValueError("PassageIndex: no passages to index (the corpus is empty)")
        if vectors.dim() != 3:
            raise ValueError(f"PassageIndex: vectors must be (N >= 1, R, D), got {tuple(vectors.shape)}")
        ids = [str(p) for p in passage_ids]
        if len(ids) != vectors.shape[0]:
            raise ValueError(f"PassageIndex: {vectors.shape[0]} vectors but {len(ids)} passage_ids")
        if len(set(ids)) != len(ids):
            dupes = sorted(p for p, c in Counter(ids).items() if c > 1)[:5]
            raise ValueError(f"PassageIndex: duplicate passage ids, e.g. {dupes}")
        finite = torch.isfinite(vectors).flatten(1).all(dim=1)  # (N,)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten()[:5].tolist()
            raise ValueError(f"PassageIndex: non-finite values in the vectors of rows {bad}")
        self.passage_ids = ids
        self.similarity = similarity
        self.backend = backend
        self.step = step
        self.row_steps = torch.full((len(ids),), step, dtype=torch.long)  # (N,)
        self.fingerprint = dict(fingerprint or {})
        self.vectors = stored_vectors(vectors.detach(), similarity).contiguous()  # (N, R or 1, D)
        self._faiss, self.params = None, None
        if backend != "exact":
            flat = flat_vectors(self.vectors, similarity).cpu().contiguous().numpy()  # (N, D')
            self.params = faiss_types.resolve(backend, params, *flat.shape)
            on_cuda = self.vectors.device.type == "cuda"
            self._faiss = faiss_types.build(backend, flat, self.params, on_cuda, show_progress)

    def __len__(self) -> int:
        return len(self.passage_ids)

    @property
    def owned_rows(self) -> range:
        """The rows this process holds and refreshes: all of them (see ``ShardedIndex``)."""
        return range(len(self))

    @property
    def device(self) -> torch.device:
        return self.vectors.device

    @torch.no_grad()
    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Top-k passages per query (not differentiable: candidates only).

        Args:
            queries: (B, R, D) query retrieval vectors from the encoder that built the index.
            k: results per query; clamped to N.

        Returns:
            scores (B, k) float32 and rows (B, k) long into ``passage_ids``, best first, on the
            queries' device.
        """
        if k < 1:
            raise ValueError(f"PassageIndex.search: k must be >= 1, got {k}")
        if queries.dim() != 3 or queries.shape[-1] != self.vectors.shape[-1]:
            raise ValueError(
                f"PassageIndex.search: queries must be (B, R, {self.vectors.shape[-1]}) to match the index, "
                f"got {tuple(queries.shape)}; encode queries with the model that built the index"
            )
        k = min(k, len(self))
        out = queries.device
        if self._faiss is not None:
            import numpy as np

            q = np.ascontiguousarray(flat_vectors(queries, self.similarity).cpu().numpy())  # (B, D')
            scores, rows = faiss_types.search(self._faiss, self.backend, self.params, q, k)  # (B, k), (B, k)
            return torch.from_numpy(scores).to(out), torch.from_numpy(rows).long().to(out)
        q = queries.to(self.vectors.device, self.vectors.dtype)
        scores, rows = similarity_topk(q, self.vectors, k, self.similarity)  # (B, k), (B, k)
        return scores.to(out, torch.float32), rows.to(out)

    @torch.no_grad()
    def update(self, rows: Tensor, vectors: Tensor, step: int) -> None:
        """Replace the vectors of ``rows`` (n,) by (n, R, D) ``vectors`` computed at ``step``
        (a rolling refresh). The exact backend writes them in place. faiss: CPU IVF types remove
        and re-add those rows (the trained quantizer is kept); flat, HNSW and GPU indexes are
        refilled from the stored vectors (HNSW rebuilds its graph: slow at large N, prefer IVF).

        Raises:
            ValueError: rows out of range or repeated, mis-shaped or non-finite vectors.
        """
        rows = rows.detach().long().cpu().flatten()
        if len(rows) == 0:
            return
        n = len(self)
        if int(rows.min()) < 0 or int(rows.max()) >= n or len(set(rows.tolist())) != len(rows):
            raise ValueError(f"PassageIndex.update: rows must be distinct and lie in [0, {n})")
        new = stored_vectors(vectors.detach(), self.similarity)
        if tuple(new.shape) != (len(rows), *self.vectors.shape[1:]):
            raise ValueError(
                f"PassageIndex.update: {len(rows)} rows need vectors of shape "
                f"({len(rows)}, {', '.join(map(str, self.vectors.shape[1:]))}) after pooling, got {tuple(new.shape)}"
            )
        if not bool(torch.isfinite(new).all()):
            raise ValueError("PassageIndex.update: non-finite values in the new vectors")
        # an index built under Lightning's validation holds inference tensors: no in-place writes
        self.vectors, self.row_steps = writable(self.vectors), writable(self.row_steps)
        self.vectors[rows.to(self.vectors.device)] = new.to(self.vectors)
        self.row_steps[rows] = step
        self.step = int(self.row_steps.min())
        if self._faiss is not None:
            flat = flat_vectors(self.vectors[rows.to(self.vectors.device)], self.similarity)
            faiss_types.update(
                self._faiss,
                self.backend,
                rows.numpy(),
                flat.cpu().contiguous().numpy(),
                lambda: flat_vectors(self.vectors, self.similarity).cpu().contiguous().numpy(),
            )

    def ages(self, rows: Tensor, step: int) -> Tensor:
        """(...,) float: how many steps before ``step`` the vectors of ``rows`` were computed."""
        return (step - self.row_steps[rows.detach().long().cpu()]).float()

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Everything the index is, as tensors and plain data (a training checkpoint's copy, so a
        resumed fit searches exactly the index the interrupted one had, rolling rows and faiss
        structure included; loadable with ``torch.load(weights_only=True)``)."""
        state = {
            "vectors": self.vectors.detach().cpu().clone(),
            "passage_ids": list(self.passage_ids),
            "similarity": self.similarity,
            "backend": self.backend,
            "step": int(self.step),
            "row_steps": self.row_steps.detach().cpu().clone(),
            "fingerprint": dict(self.fingerprint),
            "params": self.params.as_dict() if self.params is not None else None,
        }
        if self._faiss is not None:
            state["faiss"] = torch.from_numpy(faiss_types.serialize(self._faiss).copy())
        return state

    @classmethod
    def from_state_dict(cls, state: dict, device: str | torch.device = "cpu") -> PassageIndex:
        """The index ``state_dict`` described, on ``device``, without re-encoding or retraining."""
        index = cls.__new__(cls)
        index.passage_ids = list(state["passage_ids"])
        index.similarity = state["similarity"]
        index.backend = state["backend"]
        index.step = int(state["step"])
        index.row_steps = state["row_steps"].clone()
        index.fingerprint = dict(state["fingerprint"])
        index.vectors = state["vectors"].to(device).contiguous()
        index.params = faiss_types.FaissParams(**state["params"]) if state["params"] is not None else None
        index._faiss = None
        if "faiss" in state:
            on_cuda = index.vectors.device.type == "cuda"
            index._faiss = faiss_types.deserialize(
                state["faiss"].numpy(), index.backend, index.params, on_cuda
            )
        return index

    # ----------------------------------------------------------------- save / load
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index folder atomically (replacing an existing index there)."""
        target = Path(directory)
        if target.exists() and not (
            target.is_dir() and ((target / META_FILE).exists() or not any(target.iterdir()))
        ):
            raise FileExistsError(
                f"PassageIndex.save: {target} exists and is not an index folder; choose another path"
            )
        with atomic_dir(target) as tmp:
            save_file({"vectors": self.vectors.detach().cpu().contiguous()}, tmp / VECTORS_FILE)
            (tmp / IDS_FILE).write_text(json.dumps(self.passage_ids))
            meta = {
                "format_version": FORMAT_VERSION,
                "similarity": self.similarity,
                "backend": self.backend,
                "shape": list(self.vectors.shape),
                "built_at_step": self.step,
                "fingerprint": self.fingerprint,
                "params": self.params.as_dict() if self.params is not None else {},
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        return target

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        device: str | torch.device = "cpu",
        expect: dict[str, str] | None = None,
        similarity: str | None = None,
    ) -> PassageIndex:
        """Load and validate an index folder written by :meth:`save`.

        Args:
            directory: the folder.
            device: where the vectors go.
            expect: fingerprints the index must have been built with (e.g. the passage
                encoder's and the corpus's); a missing or different one is refused.
            similarity: the similarity the index must have been built for.

        Raises:
            IndexFormatError: missing, unreadable or disagreeing files; another format version;
                another encoder, corpus or similarity than expected (both named).
        """
        folder = Path(directory)

        def fail(problem: str) -> IndexFormatError:
            return IndexFormatError(f"{folder}: {problem}")

        if not folder.is_dir():
            raise fail("not an index folder; build an index and save it there first")
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise fail(f"{META_FILE} is missing or not JSON ({err})") from err
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            version = meta.get("format_version") if isinstance(meta, dict) else None
            raise fail(f"index format_version {version!r} is not {FORMAT_VERSION}; rebuild the index")
        try:
            ids = json.loads((folder / IDS_FILE).read_text(encoding="utf-8"))
            vectors = load_file(folder / VECTORS_FILE)["vectors"]
        except Exception as err:  # noqa: BLE001 - OSError, JSON, SafetensorError, KeyError
            raise fail(
                f"unreadable {IDS_FILE} or {VECTORS_FILE} ({type(err).__name__}: {err}); rebuild the index"
            ) from err
        if not isinstance(ids, list) or not all(isinstance(p, str) for p in ids):
            raise fail(f"{IDS_FILE} must be a JSON list of strings")
        if list(vectors.shape) != meta.get("shape") or len(ids) != vectors.shape[0]:
            raise fail(
                f"{VECTORS_FILE} holds {tuple(vectors.shape)}, {META_FILE} says {meta.get('shape')}, "
                f"{IDS_FILE} has {len(ids)} ids; rebuild the index"
            )
        if similarity is not None and meta.get("similarity") != similarity:
            raise fail(
                f"built for similarity {meta.get('similarity')!r}, expected {similarity!r}; rebuild the index"
            )
        saved = meta.get("fingerprint") or {}
        for key, value in (expect or {}).items():
            if saved.get(key) != value:
                raise fail(
                    f"built with {key} {saved.get(key) or '(no fingerprint)'}, but this {key} is {value}: "
                    "the index belongs to another run; rebuild the index"
                )
        try:
            return cls(
                vectors.to(device),
                ids,
                meta["similarity"],
                meta["backend"],
                int(meta["built_at_step"]),
                saved,
                meta.get("params") or None,
            )
        except (KeyError, ValueError) as err:
            raise fail(f"{META_FILE}: {err}") from err

    def __repr__(self) -> str:
        return (
            f"PassageIndex(N={len(self)}, vectors={tuple(self.vectors.shape)}, similarity={self.similarity!r}, "
            f"backend={self.backend!r}, device={self.device}, step={self.step})"
        )
