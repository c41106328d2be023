"""An index sharded across distributed ranks: each rank encodes and holds 1/W of the corpus.

Under Lightning DDP (any ``torch.distributed`` process group with W > 1 ranks)
``RAGSystem.build_index`` encodes only this rank's contiguous slice of the corpus
(``shard_range``) and wraps the local ``PassageIndex`` in a ``ShardedIndex``. A search is
collective (every rank calls it the same number of times, with any number of queries, 0 included):

    queries (B_r, R, D) on rank r   -- all_gather (padded to the largest B) -->  (W * B_max, R, D)
    -> each rank searches its shard: local top-k scores and *global* rows
    -> all_gather the per-shard results -> (W shards, W * B_max, k)
    -> each rank merges the W * k results of its own queries into the top-k

The merged result equals a single-process search over the whole corpus for the exact backends
(every shard returns its exact top-k, and the global top-k lies within their union). A rolling
refresh re-encodes only the local shard (``owned_rows``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from joint_rag.retrieval.index import PassageIndex, writable


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_range(n: int, rank: int, world_size: int) -> range:
    """The rows of an N-row corpus that ``rank`` holds: a contiguous slice, sizes differing by at
    most one.

    Raises:
        ValueError: more ranks than passages (a rank would hold nothing).
    """
    if world_size > n:
        raise ValueError(
            f"the index has {n} passages but there are {world_size} ranks: every rank needs at least one "
            "passage; use fewer devices or set model.shard_index: false"
        )
    return range(rank * n // world_size, (rank + 1) * n // world_size)


def _comm_device(device: torch.device) -> torch.device:
    """Where collectives run: the CPU for gloo, the tensors' device for nccl."""
    return torch.device("cpu") if dist.get_backend() == "gloo" else device


def _gather(x: Tensor) -> Tensor:
    """all_gather of same-shaped tensors -> (W, *x.shape)."""
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.stack(out)


class ShardedIndex:
    """This rank's shard (a ``PassageIndex`` over rows ``owned_rows``) searched collectively.

    Attributes:
        local: the shard's index (its rows 0.. are corpus rows ``owned_rows``).
        owned_rows: the global rows this rank holds.
        passage_ids: every passage id, global row order (for turning results into ids).
    """

    def __init__(self, local: PassageIndex, owned_rows: range, passage_ids: list[str]) -> None:
        self.local = local
        self.owned_rows = owned_rows
        self.passage_ids = passage_ids
        self.row_steps = torch.full((len(passage_ids),), local.step, dtype=torch.long)  # (N,)
        self.row_steps[owned_rows.start : owned_rows.stop] = local.row_steps

    def __len__(self) -> int:
        return len(self.passage_ids)

    @property
    def step(self) -> int:
        """Step of this shard's oldest row (ranks refresh in lockstep)."""
        return self.local.step

    @property
    def similarity(self) -> str:
        return self.local.similarity

    @property
    def vectors(self) -> Tensor:
        return self.local.vectors

    @property
    def device(self) -> torch.device:
        return self.local.device

    @property
    def fingerprint(self) -> dict:
        return self.local.fingerprint

    @torch.no_grad()
    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Collective top-k over the whole corpus: scores (B, k) and global rows (B, k) for this
        rank's (B, R, D) queries (B may be 0 and may differ between ranks)."""
        if k < 1:
            raise ValueError(f"ShardedIndex.search: k must be >= 1, got {k}")
        k = min(k, len(self))
        rank = dist.get_rank()
        comm = _comm_device(queries.device)
        b = torch.tensor([queries.shape[0]], device=comm)
        counts = _gather(b).flatten().tolist()  # (W,)
        b_max = max(counts)
        if b_max == 0:
            return queries.new_zeros(0, k), torch.zeros(0, k, dtype=torch.long, device=queries.device)
        padded = queries.new_zeros(b_max, *queries.shape[1:])
        padded[: queries.shape[0]] = queries
        everyone = _gather(padded.to(comm)).flatten(0, 1)  # (W * B_max, R, D)
        k_local = min(k, len(self.local))
        scores, rows = self.local.search(everyone.to(self.local.device), k_local)  # (W*B_max, k_local)
        rows = rows + self.owned_rows.start  # global rows
        if k_local < k:  # a shard smaller than k: pad with -inf so it never wins
            pad = k - k_local
            scores = torch.cat([scores, scores.new_full((scores.shape[0], pad), float("-inf"))], 1)
            rows = torch.cat([rows, rows.new_full((rows.shape[0], pad), -1)], 1)
        all_scores = _gather(scores.float().to(comm))  # (W shards, W*B_max, k)
        all_rows = _gather(rows.to(comm))
        mine = slice(rank * b_max, rank * b_max + counts[rank])
        s = all_scores[:, mine].permute(1, 0, 2).flatten(1)  # (B, W*k)
        r = all_rows[:, mine].permute(1, 0, 2).flatten(1)
        best, pos = s.topk(k, dim=1)  # (B, k)
        return best.to(queries.device), r.gather(1, pos).to(queries.device)

    def update(self, rows: Tensor, vectors: Tensor, step: int) -> None:
        """Rolling refresh of rows this rank holds (global rows in ``owned_rows``). Collective:
        every rank calls it at the same step, so all ranks learn every row's new age."""
        rows = rows.detach().long().cpu().flatten()
        lo, hi = self.owned_rows.start, self.owned_rows.stop
        if len(rows) and (int(rows.min()) < lo or int(rows.max()) >= hi):
            raise ValueError(f"ShardedIndex.update: this rank holds rows [{lo}, {hi}) only")
        self.local.update(rows - lo, vectors, step)
        self.row_steps = writable(self.row_steps)
        comm = _comm_device(self.local.device)
        n_max = int(_gather(torch.tensor([len(rows)], device=comm)).max())
        padded = torch.full((n_max,), -1, dtype=torch.long)
        padded[: len(rows)] = rows
        everyone = _gather(padded.to(comm)).flatten().cpu()
        self.row_steps[everyone[everyone >= 0]] = step

    def ages(self, rows: Tensor, step: int) -> Tensor:
        rows = rows.detach().long().cpu()
        return (step - self.row_steps[rows.clamp(min=0)]).float()

    def save(self, directory) -> None:
        raise RuntimeError("a sharded index holds 1/W of the corpus: export builds a whole index instead")

    def __repr__(self) -> str:
        return f"ShardedIndex(rows={self.owned_rows.start}..{self.owned_rows.stop} of {len(self)}, {self.local!r})"
