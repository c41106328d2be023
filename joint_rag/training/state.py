"""What a training checkpoint holds beyond Lightning's weights, optimiser and loop state, so that
a fit killed after a checkpoint and resumed gives the parameters, losses and metrics of an
uninterrupted run (``JointRAGModule.on_save_checkpoint``):

- the random number generators: torch (CPU and every CUDA device; the Gumbel noise of the
  selector and dropout draw from them), Python's ``random`` (gold-candidate insertion) and
  numpy's global generator, captured when the checkpoint is written and put back just before
  the next training step runs;
- the passage index as it was (vectors, row ages, faiss structure), so the resumed fit searches
  the same, possibly stale, rows instead of a fresh build (``PassageIndex.state_dict``);
- the cached corpus memory built with that index.

The data order is the ``StatefulDataLoader``'s (``training/datamodule.py``), which Lightning
saves and restores itself. Everything is tensors, strings and numbers: checkpoints load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_state() -> dict:
    """The current states of torch (CPU, CUDA), Python's and numpy's global generators."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Put back what ``rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def system_state(system) -> dict:
    """The ``RAGSystem``'s index and cached corpus memory as a checkpoint holds them (empty for
    no index or a ``ShardedIndex``, which a resumed DDP fit rebuilds)."""
    from joint_rag.retrieval.index import PassageIndex

    state: dict = {}
    if isinstance(system.index, PassageIndex):
        state["index"] = system.index.state_dict()
        if system.corpus_memory is not None:
            state["corpus_memory"] = system.corpus_memory.detach().cpu()
    return state


def restore_system_state(system, state: dict, device: torch.device) -> bool:
    """Put ``system_state``'s index and corpus memory back on ``device`` when they were built
    over the system's current corpus; returns whether they were (another corpus: no)."""
    from joint_rag.retrieval.index import PassageIndex

    index, corpus = state.get("index"), system.corpus
    if index is None or corpus is None:
        return False
    if index["fingerprint"].get("corpus") != corpus.fingerprint() or index["passage_ids"] != list(corpus.ids):
        return False
    system.index = PassageIndex.from_state_dict(index, device)
    memory = state.get("corpus_memory")
    system.corpus_memory = memory.to(device) if memory is not None else None
    return True
