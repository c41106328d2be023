"""A file cache of a frozen passage encoder's corpus vectors (``model.index_cache``).

Query-side training (``freeze_passage_encoder: true`` with a plain ``mean_pool`` or
``last_token`` retrieval vector) encodes the corpus once per run, and a grid of such runs
encodes the same corpus with the same frozen encoder again and again (SciFact's 5,183
abstracts at 192 tokens: about 2 minutes a run with MiniLM on a 2-core CPU). The cache keeps
the encoder's retrieval vectors (N, R, D) in ``DIR/<key>.safetensors``, where the key is a
sha256 over everything the vectors depend on: the corpus (ids, titles, texts, in order), the
encoder's class and constructor arguments (retrieval mode, ``max_length``,
``normalize_retrieval``, ...), tokenizer and backbone names, the backbone's weights (names,
dtypes, shapes and bytes, with the torch version and thread count), the device type, the
autocast state and the encoding batch size. Equal key, equal vectors: a hit is exact, and a
changed weight, corpus or precision is a miss, never a stale hit. Files are written atomically
(temporary file, then rename) and read with safetensors only; a file whose key or shape does
not match is ignored (and rewritten on the next save).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor, nn

from joint_rag.atomic import atomic_write
from joint_rag.data.types import Corpus
from joint_rag.training.fingerprint import module_fingerprint

FORMAT = "joint-rag index cache v1"


def _autocast_state() -> list[str]:
    return [
        f"{dev}:{torch.get_autocast_dtype(dev)}" for dev in ("cpu", "cuda") if torch.is_autocast_enabled(dev)
    ]


def cache_key(compressor: nn.Module, corpus: Corpus, device: torch.device | str, batch_size: int) -> str:
    """sha256 of what a plain-retrieval compressor's corpus vectors depend on (module docstring)."""
    backbone = compressor.backbone
    tokenizer = getattr(compressor, "tokenizer", None)
    parts = {
        "format": FORMAT,
        "corpus": corpus.fingerprint(),
        "n": len(corpus),
        "encoder": type(compressor).__qualname__,
        "retrieval": compressor.retrieval_mode,
        "max_length": compressor.max_length,
        "settings": getattr(compressor, "init_args", None),  # every constructor argument
        "normalize": getattr(compressor, "normalize_retrieval", False),  # also when set after construction
        "backbone": getattr(getattr(backbone, "config", None), "_name_or_path", type(backbone).__name__),
        "tokenizer": getattr(tokenizer, "name_or_path", None),
        "weights": module_fingerprint(backbone, FORMAT),  # with torch version and thread count
        "device": torch.device(device).type,
        "autocast": _autocast_state(),
        "batch_size": batch_size,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cache_file(directory: str | Path, key: str) -> Path:
    return Path(directory) / f"{key[:32]}.safetensors"


def load_vectors(directory: str | Path, key: str, rows: int) -> Tensor | None:
    """The cached (rows, R, D) vectors under ``key``, or None (no file, another key, a wrong
    shape, or a file safetensors cannot read)."""
    path = cache_file(directory, key)
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
    except (OSError, SafetensorError, ValueError):
        return None
    vectors = tensors.get("vectors")
    if meta.get("key") != key or vectors is None or vectors.dim() != 3 or vectors.shape[0] != rows:
        return None
    return vectors


def save_vectors(directory: str | Path, key: str, vectors: Tensor) -> Path:
    """Write ``vectors`` (N, R, D) under ``key`` (atomically)."""
    blob = save(
        {"vectors": vectors.detach().float().cpu().contiguous()}, metadata={"key": key, "format": FORMAT}
    )
    return atomic_write(cache_file(directory, key), blob)
