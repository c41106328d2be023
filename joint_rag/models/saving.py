"""How a module saves and loads itself (the sentence-transformers habit).

A module's folder holds a Hugging Face ``save_pretrained`` backbone with its tokenizer (LoRA
adapters merged), ``<name>.json`` with the module's constructor arguments (``init_args``, so a
new argument touches only the module's own file), and ``<name>.safetensors`` with any weights
outside the backbone. Safetensors and JSON only, never pickle (``is_module_file`` names the
kinds a module folder may hold, tokenizer text files included). Loading errors raise
``ExportFormatError`` naming the file.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor, nn

from joint_rag.atomic import write_json
from joint_rag.errors import ExportFormatError

REEXPORT = "re-export the model (`jrag export`)"
#: what a module folder may hold besides ``*.safetensors`` and ``*.json``: the tokenizer files
#: Hugging Face writes as text (``vocab.txt``, ``merges.txt``, ``chat_template.jinja``) and
#: sentencepiece models (protobuf, not pickle)
TOKENIZER_SUFFIXES = (".txt", ".jinja")
SENTENCEPIECE_FILES = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model")


def is_module_file(name: str) -> bool:
    """Whether a file of this name may be in a saved module's folder: safetensors weights, JSON
    configs and tokenizer files. Pickle-based weights (``pytorch_model.bin``, ``*.pt``,
    ``*.pkl``, ...) are not: a loader that met one could be made to unpickle it."""
    suffix = Path(name).suffix
    return suffix in (".safetensors", ".json", *TOKENIZER_SUFFIXES) or name in SENTENCEPIECE_FILES


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, in hex (read in 4 MiB blocks; about 1 GB/s on one core)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def init_args(cls: type, local_vars: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of ``cls`` from the ``locals()`` of its ``__init__`` (call it
    first thing there)."""
    names = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    return {n: copy.deepcopy(local_vars[n]) for n in names}


def merged(model: nn.Module) -> nn.Module:
    """The model with LoRA adapters merged (on a copy); the model itself when it has none."""
    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload()
    return model


def save_backbone(model: nn.Module, tokenizer, folder: Path) -> None:
    """Hugging Face weights (safetensors, adapters merged) and tokenizer into ``folder``."""
    with quiet_transformers():
        merged(model).save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)


def weights_fingerprint(folder: Path) -> str:
    """sha256 of a saved module's weight files (``*.safetensors`` in ``folder``, by name): what the
    index of an export records about the passage encoder that built it."""
    digest = hashlib.sha256()
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ExportFormatError(f"{folder}: no .safetensors weights to fingerprint; {REEXPORT}")
    for path in files:
        digest.update(path.name.encode() + b"\x00")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"


def save_config(folder: Path, name: str, config: dict[str, Any]) -> None:
    write_json(folder / f"{name}.json", config)


def read_config(folder: Path, name: str, cls: type) -> dict[str, Any]:
    """``<name>.json``: a JSON object whose keys are constructor arguments of ``cls``."""
    path = folder / f"{name}.json"
    obj = read_json(path)
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ExportFormatError(
            f"{path}: keys {unknown} are not arguments of {cls.__name__} (written by another joint-rag "
            f"version?); {REEXPORT}"
        )
    return obj


def build_saved(cls: type, folder: Path, name: str):
    """``cls(**<name>.json)`` with the folder itself as the backbone; a folder that does not load
    is an ExportFormatError naming it."""
    config = read_config(folder, name, cls)
    try:
        with quiet_transformers():
            return cls(**{**config, "backbone": str(folder)})
    except Exception as err:  # noqa: BLE001 - HF raises many types for a damaged folder
        raise ExportFormatError(f"{folder}: cannot build the {name} ({err}); {REEXPORT}") from err


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ExportFormatError naming the file otherwise."""
    if not path.is_file():
        raise ExportFormatError(f"{path}: missing; the folder is not a complete export: {REEXPORT}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportFormatError(f"{path}: not valid JSON ({err}); {REEXPORT}") from err
    if not isinstance(obj, dict):
        raise ExportFormatError(f"{path}: expected a JSON object, got {type(obj).__name__}; {REEXPORT}")
    return obj


def read_tensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(path)
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ...
        raise ExportFormatError(f"{path}: not a readable safetensors file ({err}); {REEXPORT}") from err


def state_with_prefix(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries ``prefix.*`` of ``tensors`` with the prefix removed."""
    return {k.removeprefix(f"{prefix}."): v for k, v in tensors.items() if k.startswith(f"{prefix}.")}


def load_state(module: nn.Module, state: dict[str, Tensor], path: Path, what: str) -> None:
    """``module.load_state_dict(state)`` (strict); a mismatch names the file."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise ExportFormatError(
            f"{path}: {what} does not match ({first[-1].strip() if first else err}); {REEXPORT}"
        ) from err


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports (e.g. an unused BERT pooler) and progress bars."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
