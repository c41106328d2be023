"""The export format: a ``RAGSystem`` as a self-describing folder, written and verified here.

Layout (``format_version`` 3; safetensors and JSON only, never pickle)::

    joint_rag.json             manifest: format_version, library versions, the system's settings
                               (similarity, C, query encoder, index backend), the selector's
                               arguments, counts, prompt template, what each part was trained
                               from, trained steps, created_at, and ``files``: the sha256 and
                               size of every other file (written last)
    compressor/                Compressor.save_pretrained (passage encoder)
    query_encoder/             Compressor.save_pretrained, only for a separate query encoder
    generator/                 Generator.save_pretrained
    index/                     PassageIndex.save over the corpus, encoded at export time
    corpus.jsonl               the corpus the index was built from: {_id, title, text, group}
    corpus_memory.safetensors  memory (N, M, H) of the corpus (memory-mode generators)
    config.yaml                the experiment config (when given)
    README.md                  model card with the evaluation table

Each module saves and loads itself; this file only knows the manifest and the layout. The
folder is written through ``joint_rag.atomic.atomic_dir``: a failed or interrupted export leaves
nothing behind, and a killed one's temporary folder is removed by the next export to the same
place.

``load_system`` raises ``ExportFormatError`` naming the file, before the system is returned,
for: a symbolic link or a non-regular file anywhere in the folder (nothing outside the folder
is read); a file of a kind an export does not hold (only safetensors, JSON and tokenizer text;
a ``pytorch_model.bin`` is refused, never unpickled); a ``files`` entry that is absolute or has
``..``; a listed file missing, an unlisted file present; a part that disagrees with the
manifest or the others (shapes: M, H, index vectors against a probe query of the query
encoder, corpus memory against corpus and compressor; the index's encoder and corpus
fingerprints); and last a file whose size or sha256 is not the manifest's (a same-shaped file
swapped in from another export, or an edited byte). Hidden entries (``.*``, e.g. ``.DS_Store``)
are ignored: nothing loads them. Exports of ``format_version`` 2 (no digests) load with a
warning; version 1 is refused with the command that rewrites it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors.torch import save_file

import joint_rag
from joint_rag.atomic import atomic_dir, remove_stale
from joint_rag.data.reading import get_field, iter_jsonl
from joint_rag.data.types import Corpus, DataError, Passage
from joint_rag.errors import ExportError, ExportFormatError, IndexFormatError
from joint_rag.models.compressor import Compressor
from joint_rag.models.generator import Generator
from joint_rag.models.saving import (
    REEXPORT,
    file_sha256,
    is_module_file,
    quiet_transformers,
    read_json,
    read_tensors,
    weights_fingerprint,
)
from joint_rag.models.selection import TopKSelector
from joint_rag.retrieval.index import PassageIndex
from joint_rag.system import RAGSystem

FORMAT_VERSION = 3
#: the oldest format still loaded (version 2: the same layout, no ``files`` digests)
UNVERIFIED_FORMAT_VERSION = 2
MANIFEST = "joint_rag.json"
FILES_KEY = "files"
COMPRESSOR_DIR, QUERY_ENCODER_DIR, GENERATOR_DIR, INDEX_DIR = (
    "compressor",
    "query_encoder",
    "generator",
    "index",
)
CORPUS_FILE, MEMORY_FILE = "corpus.jsonl", "corpus_memory.safetensors"
CONFIG_FILE, CARD_FILE = "config.yaml", "README.md"
#: file kinds by place: the top level; the index folder; module folders (``is_module_file``)
_TOP_SUFFIXES = (".safetensors", ".json", ".jsonl", ".yaml", ".md")
_INDEX_SUFFIXES = (".safetensors", ".json")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SYSTEM_KEYS = ("similarity", "num_candidates", "query_encoder", "index_backend", "encode_batch_size")
_REEXPORT_OLD = (
    "re-export it with this version: `jrag export --ckpt RUN/checkpoints/last.ckpt --out DIR` "
    "(or `jrag export --untrained --config CFG --out DIR`)"
)


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty ``out`` without ``overwrite`` (after removing what killed
    exports to ``out`` left next to it, or putting back a folder one had moved aside)."""
    remove_stale(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"output {out} already exists; choose another --out or pass --overwrite")


# ----------------------------------------------------------------------------- save
@torch.no_grad()
def save_system(
    system: RAGSystem,
    out_dir: str | os.PathLike,
    config: str | os.PathLike | dict | None = None,
    metrics: dict[str, Any] | None = None,
    step: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write ``system`` (with its attached corpus) as an export folder.

    The corpus is re-encoded with the current weights (eval mode) for the index and the corpus
    memory; the system itself is not modified.

    Args:
        system: the system; ``system.corpus`` is what gets indexed.
        out_dir: the export folder to create.
        config: experiment YAML path or dict, copied to ``config.yaml``.
        metrics: evaluation results for the model card, e.g. ``{"before": {...}, "after": {...}}``.
        step: training step recorded in the manifest and the index.
        overwrite: replace an existing ``out_dir``.
    """
    out = Path(out_dir)
    check_out_dir(out, overwrite)
    if system.corpus is None:
        raise ExportError("the system has no corpus attached: nothing to index")
    memory, retrieval = system.encode_corpus()  # (N, M, H) or None, (N, R, D)
    index = PassageIndex(
        retrieval,
        system.corpus.ids,
        system.similarity,
        system.index_backend,
        step,
        params=system.index_params,
    )
    with atomic_dir(out) as tmp:
        system.compressor.save_pretrained(tmp / COMPRESSOR_DIR)
        if not system.shares_query_encoder:
            system.query_encoder.save_pretrained(tmp / QUERY_ENCODER_DIR, projector=False)
        system.generator.save_pretrained(tmp / GENERATOR_DIR)
        index.fingerprint = _fingerprints(tmp, system.corpus)
        index.save(tmp / INDEX_DIR)
        if memory is not None:
            save_file({"memory": memory.cpu().contiguous()}, tmp / MEMORY_FILE)
        write_corpus(system.corpus, tmp / CORPUS_FILE)
        manifest = _manifest(system, retrieval, step)
        if isinstance(config, dict):
            import yaml

            (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        elif config is not None:
            shutil.copyfile(config, tmp / CONFIG_FILE)
        (tmp / CARD_FILE).write_text(model_card(manifest, metrics, out.name))
        manifest[FILES_KEY] = file_digests(tmp)  # every file but the manifest, written last
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return out


def file_digests(folder: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "size"}}`` of every file in an export folder but the
    manifest (hidden entries skipped, as ``load_system`` skips them)."""
    return {
        rel: {"sha256": file_sha256(folder / rel), "size": (folder / rel).stat().st_size}
        for rel in _walk(folder)
    }


def write_corpus(corpus: Corpus, path: Path) -> None:
    """One ``{"_id", "title", "text", "group"}`` object per line (BEIR-compatible)."""
    with path.open("w", encoding="utf-8") as f:
        for p in corpus:
            rec = {"_id": p.passage_id, "title": p.title, "text": p.text, "group": p.group}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def prompt_template(generator: Generator, k: int, m: int) -> str:
    """The generator prompt with placeholders for the question and the K passage slots."""
    slot = f"<{m} memory vectors>" if generator.mode == "memory" else "{passage}"
    return generator.render_prompt("{question}", [slot] * k, None)


def _manifest(system: RAGSystem, retrieval: torch.Tensor, step: int) -> dict[str, Any]:
    import safetensors
    import transformers

    K, M = system.selector.k, system.compressor.memory_slots
    versions = {m.__name__: m.__version__ for m in (joint_rag, torch, transformers, safetensors)}
    return {
        "format_version": FORMAT_VERSION,
        "library": "joint_rag",
        "versions": versions,
        "system": {
            "similarity": system.similarity,
            "num_candidates": system.num_candidates,
            "query_encoder": "shared" if system.shares_query_encoder else "separate",
            "index_backend": system.index_backend,
            "encode_batch_size": system.encode_batch_size,
            "index_params": system.index_params,
        },
        "selector": system.selector.init_args,
        "K": K,
        "M": M,
        "generator_mode": system.generator.mode,
        "num_passages": len(system.corpus),
        "retrieval_shape": list(retrieval.shape),
        "trained_steps": step,
        "trained_from": {
            "compressor": str(system.compressor.init_args["backbone"]),
            "generator": str(system.generator.init_args["backbone"]),
        },
        "prompt_template": prompt_template(system.generator, K, M),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


_CARD = """# {name}

A retriever (compressor + query encoder) and a generator trained jointly with joint-rag {version}:
the generator reads the top-K retrieved passages ({mode}) and its answer loss trained the
retrieval embeddings through a differentiable top-k.

## Use

```python
from joint_rag import JointRAG

rag = JointRAG.from_pretrained("{name}")
rag.answer(["your question"])  # [{{"answer": ..., "passages": [{{id, title, text, score}}, ...]}}]
```

or `jrag answer --model {name} "your question"`.

## System

| setting | value |
|---|---|
{settings}

## Evaluation

{evaluation}

## Files

Safetensors and JSON only, no pickle; the layout is described in `joint_rag/artifact.py`.

## Prompt

```
{prompt}
```
"""


def model_card(manifest: dict[str, Any], metrics: dict[str, Any] | None, name: str) -> str:
    """README.md: what the folder holds, how to use it, and the evaluation table."""
    settings = {"K": manifest["K"], "M": manifest["M"], **manifest["system"]}
    settings |= {"generator_mode": manifest["generator_mode"], "num_passages": manifest["num_passages"]}
    mode = "as compressed memory" if manifest["generator_mode"] == "memory" else "as text"
    return _CARD.format(
        name=name,
        version=manifest["versions"]["joint_rag"],
        mode=mode,
        settings="\n".join(f"| {k} | {v} |" for k, v in settings.items()),
        evaluation="\n".join(metrics_table(metrics))
        if metrics
        else "No evaluation was recorded with this export.",
        prompt=manifest["prompt_template"],
    )


def metrics_table(metrics: dict[str, Any]) -> list[str]:
    """Markdown table: one row per metric, one column per run ({"before": {...}, "after": {...}})."""
    runs = metrics if all(isinstance(v, dict) for v in metrics.values()) else {"value": metrics}
    names = list(dict.fromkeys(k for run in runs.values() for k in run))
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    rows = ["| metric | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for n in names:
        rows.append(
            f"| {n} | " + " | ".join(fmt(run[n]) if n in run else "-" for run in runs.values()) + " |"
        )
    return rows


# ----------------------------------------------------------------------------- load
def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest, its format version checked (newer: upgrade; 2: loads with a warning that it
    has no digests; older: re-export) and, from version 3, its ``files`` entries."""
    path = folder / MANIFEST
    manifest = read_json(path)
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ExportFormatError(f"{path}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ExportFormatError(
            f"{path}: format_version {version} was written by a newer joint-rag; this version reads "
            f"format_version {FORMAT_VERSION}: upgrade joint-rag (pip install -U joint-rag)"
        )
    if version < UNVERIFIED_FORMAT_VERSION:
        raise ExportFormatError(
            f"{path}: format_version {version} was written by an older joint-rag (before one RAGSystem per "
            f"export); {_REEXPORT_OLD}"
        )
    required = ("system", "selector", "K", "M") + ((FILES_KEY,) if version >= 3 else ())
    missing = [k for k in required if k not in manifest]
    missing += [f"system.{k}" for k in _SYSTEM_KEYS if k not in manifest.get("system", {})]
    if missing:
        raise ExportFormatError(f"{path}: missing keys {missing}; {REEXPORT}")
    if version < FORMAT_VERSION:
        warnings.warn(
            f"{path}: format_version {version} has no file digests, so files swapped in from another "
            f"export or edited cannot be detected; {_REEXPORT_OLD} to add them",
            UserWarning,
            stacklevel=3,
        )
        return manifest
    _check_listed(path, manifest[FILES_KEY])
    return manifest


def _check_listed(path: Path, files: Any) -> None:
    """The manifest's ``files``: relative paths inside the folder, each with a sha256 and size."""
    if not isinstance(files, dict):
        raise ExportFormatError(f"{path}: '{FILES_KEY}' must be an object of path -> digest; {REEXPORT}")
    for name, entry in files.items():
        parts = name.split("/")
        if PurePosixPath(name).is_absolute() or "\\" in name or any(p in ("", ".", "..") for p in parts):
            raise ExportFormatError(
                f"{path}: the files entry {name!r} leaves the export folder (absolute, '..' or empty parts); "
                f"nothing outside the folder is read: {REEXPORT}"
            )
        ok = isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
        ok = ok and bool(_SHA256.match(entry["sha256"])) and type(entry.get("size")) is int
        if not ok or name == MANIFEST:
            raise ExportFormatError(
                f'{path}: the files entry {name!r} must be {{"sha256": 64 hex digits, "size": bytes}}; '
                f"{REEXPORT}"
            )


def _fingerprints(folder: Path, corpus: Corpus) -> dict[str, str]:
    """What an export's index must have been built from: its passage encoder's weight files and
    its corpus."""
    return {"encoder": weights_fingerprint(folder / COMPRESSOR_DIR), "corpus": corpus.fingerprint()}


def _file_kind_ok(rel: str) -> bool:
    """Whether an export may hold a file at ``rel``: safetensors, JSON, the corpus, config and
    model card at the top; safetensors and JSON in the index; module files elsewhere."""
    parts = rel.split("/")
    suffix = PurePosixPath(rel).suffix
    if len(parts) == 1:
        return suffix in _TOP_SUFFIXES
    if parts[0] == INDEX_DIR:
        return suffix in _INDEX_SUFFIXES
    return is_module_file(parts[-1])


def _walk(folder: Path) -> list[str]:
    """The relative paths (``/``-separated, sorted) of the files in an export folder but the
    manifest; hidden entries are skipped.

    Raises:
        ExportFormatError: a symbolic link (file or folder: links are never followed), an
            entry that is not a regular file or folder, or a file of a kind an export does not
            hold (``_file_kind_ok``), named.
    """
    files = []
    for root, dirs, names in os.walk(folder):  # does not enter linked folders; they are refused
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in [*dirs, *sorted(n for n in names if not n.startswith("."))]:
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                raise ExportFormatError(
                    f"{path}: a symbolic link (to {os.readlink(path)}); an export holds regular files only "
                    f"and never follows links out of its folder: put the file itself there, or {REEXPORT}"
                )
            if name in dirs:
                continue
            if not path.is_file():
                raise ExportFormatError(f"{path}: not a regular file; {REEXPORT}")
            if not _file_kind_ok(rel):
                raise ExportFormatError(
                    f"{path}: not a kind of file an export holds (safetensors, JSON and tokenizer text only; "
                    f"pickle-based weights such as .bin, .pt or .pkl are never loaded): remove it, or {REEXPORT}"
                )
            if rel != MANIFEST:
                files.append(rel)
    return sorted(files)


def _check_tree(folder: Path, manifest: dict[str, Any]) -> None:
    """The folder holds regular files of export kinds only, and (from version 3) exactly the
    files the manifest lists."""
    present = _walk(folder)
    listed = manifest.get(FILES_KEY)
    if listed is None:  # version 2: nothing to compare with
        return
    missing = sorted(set(listed) - set(present))
    if missing:
        raise ExportFormatError(
            f"{folder}: missing {', '.join(missing)}; the export is incomplete: {REEXPORT}"
        )
    extra = sorted(set(present) - set(listed))
    if extra:
        more = f" (and {', '.join(extra[1:])})" if len(extra) > 1 else ""
        raise ExportFormatError(
            f"{folder / extra[0]}{more}: not listed in {MANIFEST}, so not written by this export (copied in "
            f"from another one?): remove it, or {REEXPORT}"
        )


def _start_digests(folder: Path, manifest: dict[str, Any]) -> tuple[ThreadPoolExecutor, dict[str, Future]]:
    """Hash the listed files in a background thread while the parts load (file reads and
    hashlib release the GIL): ``{relative path: future of (size, sha256)}``."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jrag-digests")

    def digest(path: Path) -> tuple[int, str]:
        return path.stat().st_size, file_sha256(path)

    listed = manifest.get(FILES_KEY) or {}
    return pool, {rel: pool.submit(digest, folder / rel) for rel in sorted(listed)}


def _verify_digests(folder: Path, manifest: dict[str, Any], digests: dict[str, Future]) -> None:
    """Every listed file has the size and sha256 the manifest records (version 3)."""
    bad = []
    for rel, entry in (manifest.get(FILES_KEY) or {}).items():
        try:
            size, sha = digests[rel].result()
        except OSError:
            size, sha = -1, ""
        if size != entry["size"] or sha != entry["sha256"]:
            bad.append(rel)
    if bad:
        more = f" (and {', '.join(bad[1:])})" if len(bad) > 1 else ""
        raise ExportFormatError(
            f"{folder / bad[0]}{more}: the content is not what {MANIFEST} records (sha256/size): the file was "
            f"edited, or copied in from another export with the same shapes; {REEXPORT}"
        )


def _check_shapes(folder: Path, system: RAGSystem, index: PassageIndex) -> None:
    """The index's vectors fit what the query encoder gives (a probe query, encoded now, not
    at the first real query)."""
    try:
        with torch.no_grad():
            probe = system.encode_queries(["shape check"])  # (1, R, D)
    except RuntimeError as err:  # e.g. a query encoder whose hidden size is not the projector's
        part = COMPRESSOR_DIR if system.shares_query_encoder else QUERY_ENCODER_DIR
        first = str(err).strip().splitlines()
        raise ExportFormatError(
            f"{folder / part}: the query encoder cannot encode a query ({first[0] if first else err}): its parts "
            f"come from different exports; {REEXPORT}"
        ) from err
    R, D = probe.shape[1:]
    stored = tuple(index.vectors.shape)  # (N, R' or 1, D')
    if stored[-1] != D or (system.similarity == "flat_cosine" and stored[1] != R):
        raise ExportFormatError(
            f"{folder / INDEX_DIR / 'vectors.safetensors'}: vectors of shape {stored}, but the query encoder "
            f"gives (B, {R}, {D}) for similarity {system.similarity!r}: the index was not built by this "
            f"export's encoders; {REEXPORT}"
        )


def _check_files(folder: Path, manifest: dict[str, Any]) -> None:
    """Every file the loader needs is present (all missing ones named at once)."""
    parts = [(COMPRESSOR_DIR, "compressor"), (GENERATOR_DIR, "generator")]
    if manifest["system"]["query_encoder"] == "separate":
        parts.append((QUERY_ENCODER_DIR, "compressor"))
    need = [CORPUS_FILE, f"{INDEX_DIR}/meta.json"]
    for sub, name in parts:
        need += [
            f"{sub}/{name}.json",
            f"{sub}/config.json",
            f"{sub}/tokenizer_config.json",
            f"{sub}/model.safetensors",
        ]
    need += [f"{COMPRESSOR_DIR}/compressor.safetensors"]
    if manifest.get("generator_mode") == "memory":
        need.append(MEMORY_FILE)
    missing = [f for f in need if not (folder / f).is_file()]
    if missing:
        raise ExportFormatError(
            f"{folder}: missing {', '.join(missing)}; the export is incomplete: {REEXPORT}"
        )


def load_system(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[RAGSystem, dict]:
    """Load and verify an export folder: the system (eval mode, corpus, index and corpus memory
    attached, on ``device``) and its manifest.

    The checks, in order (the module docstring lists them): the manifest and its version; the
    folder's entries (links, file kinds, the listed files against those present); the parts as
    they load (shapes, fingerprints); last the size and sha256 of every listed file (hashed in
    a background thread while the parts load), so a file that fails to parse is named by its
    own error and one that parses but is not the exported one by the digest.

    Raises:
        ExportFormatError: missing, extra, linked or invalid files, another ``format_version``,
            parts that disagree (corpus vs index, memory vs generator, index vs query encoder),
            or a file that is not the one exported; the message names the file.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise ExportFormatError(f"{folder}: not a folder; export a model there with `jrag export` first")
    manifest = read_manifest(folder)
    _check_tree(folder, manifest)
    _check_files(folder, manifest)
    pool, digests = _start_digests(folder, manifest)
    try:
        system = _load_parts(folder, manifest, device)
        _verify_digests(folder, manifest, digests)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # after a failed load: no more hashing
    return system, manifest


def _load_parts(folder: Path, manifest: dict[str, Any], device: str | torch.device) -> RAGSystem:
    """The system of a folder whose entries ``load_system`` checked, every part checked against
    the manifest and the others."""
    settings = manifest["system"]
    with quiet_transformers():
        compressor = Compressor.from_pretrained(folder / COMPRESSOR_DIR)
        separate = settings["query_encoder"] == "separate"
        query_encoder = Compressor.from_pretrained(folder / QUERY_ENCODER_DIR) if separate else "shared"
        generator = Generator.from_pretrained(folder / GENERATOR_DIR)
    try:
        system = RAGSystem(
            compressor,
            generator,
            TopKSelector(**manifest["selector"]),
            similarity=settings["similarity"],
            num_candidates=settings["num_candidates"],
            query_encoder=query_encoder,
            index_backend=settings["index_backend"],
            encode_batch_size=settings["encode_batch_size"],
            index_params=settings.get("index_params"),
        )
    except (TypeError, ValueError) as err:
        raise ExportFormatError(f"{folder / MANIFEST}: {err}; {REEXPORT}") from err
    problems = []
    if manifest["M"] != compressor.memory_slots:
        problems.append(f"M={manifest['M']} but the compressor gives {compressor.memory_slots} memory slots")
    if compressor.output_dim != generator.hidden_size:
        problems.append(
            f"compressor output_dim {compressor.output_dim} != generator hidden {generator.hidden_size}"
        )
    if manifest["K"] != system.selector.k:
        problems.append(f"K={manifest['K']} but the selector takes k={system.selector.k}")
    if problems:
        raise ExportFormatError(f"{folder / MANIFEST}: " + "; ".join(problems) + f"; {REEXPORT}")
    corpus = read_corpus(folder / CORPUS_FILE)
    system.attach_corpus(corpus)
    system.to(device).eval()
    try:
        index = PassageIndex.load(
            folder / INDEX_DIR,
            device=device,
            expect=_fingerprints(folder, corpus),
            similarity=system.similarity,
        )
    except IndexFormatError as err:
        raise ExportFormatError(f"{err} (the folder mixes two exports?); {REEXPORT}") from err
    if index.passage_ids != corpus.ids:
        raise ExportFormatError(
            f"{folder / INDEX_DIR} holds {len(index)} passages but {folder / CORPUS_FILE} {len(corpus)} "
            f"(or in another order); the folder mixes two exports: {REEXPORT}"
        )
    _check_shapes(folder, system, index)
    system.index = index
    if generator.mode == "memory":
        memory = read_tensors(folder / MEMORY_FILE).get("memory")
        expected = (len(corpus), compressor.memory_slots, generator.hidden_size)
        if memory is None or tuple(memory.shape) != expected:
            got = None if memory is None else tuple(memory.shape)
            raise ExportFormatError(
                f"{folder / MEMORY_FILE}: expected 'memory' of shape {expected} (one row per passage), got {got}; "
                f"{REEXPORT}"
            )
        system.corpus_memory = memory.to(device)
    return system


def read_corpus(path: Path) -> Corpus:
    """Read an exported ``corpus.jsonl`` ({_id, title, text, group} per line)."""
    try:
        passages = []
        for lineno, rec in iter_jsonl(path):
            where = f"{path}:{lineno}"
            passages.append(
                Passage(
                    str(get_field(rec, "_id", where, (str, int))),
                    get_field(rec, "title", where, optional=True) or "",
                    get_field(rec, "text", where),
                    get_field(rec, "group", where, optional=True) or "",
                )
            )
        return Corpus(passages, source=str(path))
    except DataError as err:
        raise ExportFormatError(f"{err}; {REEXPORT}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ExportFormatError(f"{path}: {err}; {REEXPORT}") from err
