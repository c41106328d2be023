"""Export a trained system into a self-describing folder that loads without Lightning.

Layout (``format_version`` 1; safetensors and JSON only, never pickle)::

    joint_rag.json            manifest: format_version, library versions, K, M, similarity, C,
                              prompt template, counts, created_at
    compressor/               passage encoder: HF ``save_pretrained`` backbone + tokenizer,
                              extras.safetensors (memory_tokens (M, H_b), projector.*),
                              compressor.json (init args)
    query_encoder/            same layout, or only compressor.json = {"shared": true}
    generator/                HF ``save_pretrained`` causal LM + tokenizer, generator.json
    index/                    PassageIndex.save (index.faiss, passage_ids.json, meta.json)
    corpus.jsonl              the corpus the index was built from: {_id, title, text, group}
    corpus_memory.safetensors memory (N, M, H) and retrieval (N, R, D) of the corpus
    config.yaml               the experiment config (when given)
    README.md                 model card with the evaluation table

LoRA adapters are merged (peft ``merge_and_unload``, on a copy) before saving. Everything is
written into a temporary folder next to ``out_dir`` and renamed at the end, so a failed export
leaves nothing behind.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

import joint_rag
from joint_rag.data.corpus import Corpus
from joint_rag.index.passage_index import PassageIndex
from joint_rag.models.scoring import index_vectors

FORMAT_VERSION = 1
MANIFEST = "joint_rag.json"
COMPRESSOR_DIR, QUERY_ENCODER_DIR, GENERATOR_DIR, INDEX_DIR = (
    "compressor",
    "query_encoder",
    "generator",
    "index",
)
COMPRESSOR_JSON, GENERATOR_JSON, EXTRAS = "compressor.json", "generator.json", "extras.safetensors"
CORPUS_FILE, MEMORY_FILE = "corpus.jsonl", "corpus_memory.safetensors"
CONFIG_FILE, CARD_FILE = "config.yaml", "README.md"
RUN_ONLY_KEYS = ("ckpt_path", "weights_only", "verbose", "return_predictions")


class ExportError(ValueError):
    """An export cannot be written (missing checkpoint, no config, output exists, ...)."""


class ExportFormatError(ValueError):
    """An exported folder is missing files or holds invalid ones. The message names the file."""


# ----------------------------------------------------------------------------- checkpoint -> folder
def export_checkpoint(
    ckpt_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config_path: str | os.PathLike | None = None,
    metrics: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Export a Lightning checkpoint of ``JointRAGModule``.

    The module is rebuilt from the experiment config (``config_path``, else the ``config.yaml``
    LightningCLI wrote next to the run) and the checkpoint's ``state_dict`` is loaded into it;
    the checkpoint is read with ``torch.load(weights_only=True)`` only.

    Args:
        ckpt_path: the ``.ckpt`` file.
        out_dir: the export folder to create.
        config_path: experiment YAML; None searches the checkpoint's folder and its parents.
        metrics: evaluation results for the model card, e.g. ``{"before": {...}, "after": {...}}``.
        overwrite: replace an existing ``out_dir``.

    Returns:
        The export folder.

    Raises:
        ExportError: missing/unreadable checkpoint or config, or ``out_dir`` exists.
    """
    ckpt = Path(ckpt_path)
    if not ckpt.is_file():
        raise ExportError(f"checkpoint {ckpt}: no such file; pass the .ckpt written by `jrag fit`")
    _check_out_dir(Path(out_dir), overwrite)
    cfg = Path(config_path) if config_path is not None else find_config(ckpt)
    if cfg is None or not cfg.is_file():
        where = f"config {cfg}: no such file" if cfg else f"no config.yaml found next to {ckpt} or above it"
        raise ExportError(f"{where}; pass the experiment config (--config)")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling/format error means "not a usable checkpoint"
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if ln.startswith("Unsupported")), lines[0] if lines else "")
        if "weights_only" in detail:  # torch's advice to unpickle unsafely is not ours
            detail = "it holds objects other than tensors and plain containers"
        raise ExportError(
            f"checkpoint {ckpt} is not a readable weights-only checkpoint ({type(err).__name__}: {detail}); "
            "pass a .ckpt written by `jrag fit` (checkpoints are never unpickled with weights_only=False)"
        ) from err
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise ExportError(f"checkpoint {ckpt} has no 'state_dict'; pass a checkpoint written by `jrag fit`")
    module, corpus = build_module_from_config(cfg)
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        raise ExportError(f"checkpoint {ckpt} does not match the model of config {cfg}: {err}") from err
    step = int(state.get("global_step", 0))
    return export_module(module, out_dir, corpus, config=cfg, metrics=metrics, overwrite=overwrite, step=step)


def export_untrained(
    config_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    overrides: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Export the system an experiment config builds, without training: the off-the-shelf
    baseline of that config (pretrained backbones as loaded, new layers as initialised under
    the config's ``seed_everything``, which LightningCLI applies before building the model).

    Args:
        config_path: experiment YAML.
        out_dir: the export folder to create.
        overrides: dotted keys set in the config first, e.g.
            ``{"model.compressor.init_args.retrieval": "mean_pool"}`` (None removes a key); the
            export's ``config.yaml`` is the config with them applied.
        metrics: evaluation results for the model card.
        overwrite: replace an existing ``out_dir``.

    Raises:
        ExportError: missing/unreadable config, or ``out_dir`` exists.
    """
    import yaml

    from joint_rag.studies import set_dotted

    cfg = Path(config_path)
    _check_out_dir(Path(out_dir), overwrite)
    try:
        raw = yaml.safe_load(cfg.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ExportError(f"config {cfg} is not readable YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ExportError(f"config {cfg} has no 'model' section; pass an experiment config")
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    with tempfile.TemporaryDirectory(prefix="jrag-export-untrained-") as tmp:
        effective = Path(tmp) / CONFIG_FILE
        effective.write_text(yaml.safe_dump(raw, sort_keys=False))
        module, corpus = build_module_from_config(effective)
    return export_module(module, out_dir, corpus, config=raw, metrics=metrics, overwrite=overwrite, step=0)


def find_config(ckpt: Path) -> Path | None:
    """The ``config.yaml`` LightningCLI saved for the run of ``ckpt`` (searching up 3 folders)."""
    for folder in list(ckpt.resolve().parents)[:3]:
        if (folder / CONFIG_FILE).is_file():
            return folder / CONFIG_FILE
    return None


def build_module_from_config(config_path: Path) -> tuple[nn.Module, Corpus]:
    """Instantiate ``JointRAGModule`` and the corpus of its data source from an experiment YAML."""
    import yaml

    from joint_rag.cli import make_cli

    try:
        raw = yaml.safe_load(config_path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ExportError(f"config {config_path} is not readable YAML: {err}") from err
    if not isinstance(raw, dict) or "model" not in raw:
        raise ExportError(f"config {config_path} has no 'model' section; pass an experiment config")
    with tempfile.TemporaryDirectory(prefix="jrag-export-cfg-") as tmp:
        path = config_path
        if any(k in raw for k in RUN_ONLY_KEYS):  # keys of `fit`/`validate` that run=False rejects
            path = Path(tmp) / CONFIG_FILE
            path.write_text(yaml.safe_dump({k: v for k, v in raw.items() if k not in RUN_ONLY_KEYS}))
        try:
            with warnings.catch_warnings():  # `jrag export`'s own sys.argv is not for LightningCLI
                warnings.filterwarnings("ignore", message=".*args parameter is intended.*")
                cli = make_cli(["-c", str(path)], run=False)
        except SystemExit as err:
            raise ExportError(f"config {config_path} does not parse (see the message above)") from err
    return cli.model, cli.datamodule.corpus


# ----------------------------------------------------------------------------- module -> folder
@torch.no_grad()
def export_module(
    module: nn.Module,
    out_dir: str | os.PathLike,
    corpus: Corpus,
    config: str | os.PathLike | dict | None = None,
    metrics: dict[str, Any] | None = None,
    overwrite: bool = False,
    step: int | None = None,
) -> Path:
    """Export an in-memory ``JointRAGModule`` (or any module with the same parts).

    The corpus is re-encoded with the module's current weights (eval mode) for the index and
    the memory cache; the module itself is not modified.

    Args:
        module: has ``compressor``, ``query_encoder``, ``generator``, ``selector``,
            ``similarity``, ``num_candidates``.
        out_dir: the export folder to create.
        corpus: passages to index.
        config: experiment YAML path or dict, copied to ``config.yaml``.
        metrics: evaluation results for the model card.
        overwrite: replace an existing ``out_dir``.
        step: training step recorded in the index (default: the module's).

    Returns:
        The export folder.
    """
    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    if getattr(module, "candidate_source", "index") != "index":
        raise ExportError(
            "only candidate_source='index' models can be exported (answering searches the index)"
        )
    memory, retrieval = _encode_corpus(module, corpus)  # (N, M, H), (N, R, D)
    step = step if step is not None else int(getattr(module, "_current_step", lambda: 0)())
    with _atomic_dir(out, overwrite) as tmp:
        comp, qenc, gen = module.compressor, module.query_encoder, module.generator
        _save_compressor(comp, tmp / COMPRESSOR_DIR, projector="own")
        if qenc is comp:
            (tmp / QUERY_ENCODER_DIR).mkdir()
            _write_json(tmp / QUERY_ENCODER_DIR / COMPRESSOR_JSON, {"shared": True})
        else:
            shared_proj = qenc.projector is not None and qenc.projector is comp.projector
            projector = "compressor" if shared_proj else ("none" if qenc.projector is None else "own")
            _save_compressor(qenc, tmp / QUERY_ENCODER_DIR, projector=projector)
        _save_generator(gen, tmp / GENERATOR_DIR)
        PassageIndex.build(index_vectors(retrieval, module.similarity), corpus.ids, step=step).save(
            tmp / INDEX_DIR
        )
        save_file({"memory": memory.contiguous(), "retrieval": retrieval.contiguous()}, tmp / MEMORY_FILE)
        write_corpus(corpus, tmp / CORPUS_FILE)
        manifest = _manifest(module, corpus, memory, retrieval, step)
        _write_json(tmp / MANIFEST, manifest)
        if isinstance(config, dict):
            import yaml

            (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        elif config is not None:
            shutil.copyfile(config, tmp / CONFIG_FILE)
        (tmp / CARD_FILE).write_text(model_card(manifest, metrics, out.name))
    return out


def _encode_corpus(module: nn.Module, corpus: Corpus) -> tuple[torch.Tensor, torch.Tensor]:
    """Corpus memory and retrieval vectors with the module's passage encoder; module unchanged."""
    saved = module.corpus
    module.corpus = corpus
    try:
        return module.encode_corpus(show_progress=False)
    finally:
        module.corpus = saved


def _merged(model: nn.Module) -> nn.Module:
    """The model with LoRA adapters merged (on a copy); the model itself when it has none."""
    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload()
    return model


def _save_compressor(comp: nn.Module, folder: Path, projector: str) -> None:
    """Backbone + tokenizer (HF format), extras.safetensors and compressor.json."""
    folder.mkdir()
    _merged(comp.backbone).save_pretrained(folder, safe_serialization=True)
    comp.tokenizer.save_pretrained(folder)
    extras = {"memory_tokens": comp.memory_tokens.detach().cpu().contiguous()}
    if projector == "own":
        for name, t in comp.projector.state_dict().items():
            extras[f"projector.{name}"] = t.detach().cpu().contiguous()
    if comp.scorer is not None:
        for name, t in comp.scorer.state_dict().items():
            extras[f"scorer.{name}"] = t.detach().cpu().contiguous()
    save_file(extras, folder / EXTRAS)
    fields = ("num_memory_tokens", "max_length", "projector_layers", "output_dim")
    cfg = {"shared": False, **{f: getattr(comp, f) for f in fields}, "retrieval": comp.retrieval_mode}
    cfg |= {"projector": projector, "is_decoder": bool(comp.is_decoder), "backbone_hidden": int(comp.hidden)}
    cfg["lora_rank_merged"] = comp.lora_rank
    extract = ("extract_tokens", "extract_max_tokens", "extract_temperature")
    cfg |= {"memory": comp.memory_mode, **{f: getattr(comp, f) for f in extract}}
    _write_json(folder / COMPRESSOR_JSON, {**cfg, "trained_from": str(comp.backbone_spec)})


def _save_generator(gen: nn.Module, folder: Path) -> None:
    """Causal LM + tokenizer (HF format) and generator.json."""
    folder.mkdir()
    _merged(gen.model).save_pretrained(folder, safe_serialization=True)
    gen.tokenizer.save_pretrained(folder)
    fields = (
        "mode",
        "max_new_tokens",
        "max_passage_tokens",
        "max_answer_tokens",
        "system_prompt",
        "train_mode",
    )
    cfg = {f: getattr(gen, f) for f in fields} | {"use_chat_template": bool(gen.use_chat_template)}
    cfg |= {"hidden_size": gen.hidden_size, "trained_from": str(gen.backbone_spec)}
    _write_json(folder / GENERATOR_JSON, cfg)


def write_corpus(corpus: Corpus, path: Path) -> None:
    """One ``{"_id", "title", "text", "group"}`` object per line (BEIR-compatible)."""
    with path.open("w", encoding="utf-8") as f:
        for p in corpus:
            rec = {"_id": p.passage_id, "title": p.title, "text": p.text, "group": p.group}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def prompt_template(generator: nn.Module, k: int, m: int) -> str:
    """The generator prompt with placeholders for the question and the K passage slots."""
    slot = f"<{m} memory vectors>" if generator.mode == "memory" else "{passage}"
    return generator.render_prompt("{question}", [slot] * k, None)


def _manifest(module: nn.Module, corpus: Corpus, memory, retrieval, step: int) -> dict[str, Any]:
    import faiss
    import safetensors
    import transformers

    K, M = module.selector.k, module.compressor.memory_slots
    return {
        "format_version": FORMAT_VERSION,
        "library": "joint_rag",
        "versions": {m.__name__: m.__version__ for m in (joint_rag, torch, transformers, faiss, safetensors)},
        "K": K,
        "M": M,
        "similarity": module.similarity,
        "num_candidates": module.num_candidates,
        "query_encoder": "shared" if module.query_encoder is module.compressor else "separate",
        "generator_mode": module.generator.mode,
        "num_passages": len(corpus),
        "memory_shape": list(memory.shape),
        "retrieval_shape": list(retrieval.shape),
        "trained_steps": step,
        "prompt_template": prompt_template(module.generator, K, M),
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

Safetensors and JSON only, no pickle; the layout is described in `joint_rag/export.py`.

## Prompt

```
{prompt}
```
"""


def model_card(manifest: dict[str, Any], metrics: dict[str, Any] | None, name: str) -> str:
    """README.md: what the folder holds, how to use it, and the evaluation table."""
    keys = ("K", "M", "similarity", "num_candidates", "query_encoder", "generator_mode", "num_passages")
    mode = "as compressed memory" if manifest["generator_mode"] == "memory" else "as text"
    return _CARD.format(
        name=name,
        version=manifest["versions"]["joint_rag"],
        mode=mode,
        settings="\n".join(f"| {k} | {manifest[k]} |" for k in keys),
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


# ----------------------------------------------------------------------------- atomic folder
def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"output {out} already exists; choose another --out or pass --overwrite")


@contextmanager
def _atomic_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder next to ``out``; rename it to ``out`` on success, delete it on failure."""
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with quiet_transformers():
            yield tmp
        _fix_permissions(tmp)
        if out.exists():
            _check_out_dir(out, overwrite)
            old = out.parent / f"{tmp.name}.old"
            os.replace(out, old)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old, out)  # roll back to the previous export
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in created:  # parents this export created, deepest first
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        raise


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


def _fix_permissions(folder: Path) -> None:
    """mkdtemp and safetensors create owner-only entries; give the export the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [folder, *folder.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
