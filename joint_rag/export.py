"""Export: a Lightning checkpoint, an in-memory module or an untrained config becomes an export
folder (the format is ``joint_rag.artifact``'s) that ``JointRAG.from_pretrained`` loads without
Lightning.

Checkpoints are read with ``torch.load(weights_only=True)`` only. The module is rebuilt from the
experiment config (the ``config.yaml`` LightningCLI saved next to the run, or ``--config``) with
the same override mechanism as ``jrag fit`` (several ``-c`` files, dotted flags).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from joint_rag.artifact import CONFIG_FILE, check_out_dir, save_system
from joint_rag.config import JointRAGCLI, build, effective_config
from joint_rag.data.types import Corpus
from joint_rag.errors import ExportError
from joint_rag.system import RAGSystem
from joint_rag.training.module import JointRAGModule

#: state_dict prefixes of checkpoints written before the module held one RAGSystem
_SYSTEM_PARTS = ("compressor.", "query_encoder.", "generator.", "selector.")


def find_config(ckpt: Path) -> Path | None:
    """The ``config.yaml`` LightningCLI saved for the run of ``ckpt`` (searching up 3 folders)."""
    for folder in list(ckpt.resolve().parents)[:3]:
        if (folder / CONFIG_FILE).is_file():
            return folder / CONFIG_FILE
    return None


def build_from_config(configs: Sequence[str | os.PathLike], overrides: Sequence[str] = ()) -> JointRAGCLI:
    """What config files describe, instantiated (``.model``, ``.datamodule``, ``.config``)."""
    for path in configs:
        if not Path(path).is_file():
            raise ExportError(f"config {path}: no such file; pass the experiment config (--config)")
    try:
        return build(configs, overrides)
    except SystemExit as err:
        names = " + ".join(str(c) for c in configs)
        raise ExportError(f"config {names} does not parse (see the message above)") from err


def export_checkpoint(
    ckpt_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config_path: str | os.PathLike | None = None,
    metrics: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Export a Lightning checkpoint of ``JointRAGModule``.

    Args:
        ckpt_path: the ``.ckpt`` file.
        out_dir: the export folder to create.
        config_path: experiment YAML; None searches the checkpoint's folder and its parents.
        metrics: evaluation results for the model card, e.g. ``{"before": {...}, "after": {...}}``.
        overwrite: replace an existing ``out_dir``.

    Raises:
        ExportError: missing/unreadable checkpoint or config, or ``out_dir`` exists.
    """
    ckpt = Path(ckpt_path)
    if not ckpt.is_file():
        raise ExportError(f"checkpoint {ckpt}: no such file; pass the .ckpt written by `jrag fit`")
    check_out_dir(Path(out_dir), overwrite)
    cfg = Path(config_path) if config_path is not None else find_config(ckpt)
    if cfg is None:
        raise ExportError(
            f"no config.yaml found next to {ckpt} or above it; pass the experiment config (--config)"
        )
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
    cli = build_from_config([cfg])
    module, corpus = cli.model, cli.datamodule.corpus
    weights = state["state_dict"]
    if not any(k.startswith("system.") for k in weights):
        weights = {(f"system.{k}" if k.startswith(_SYSTEM_PARTS) else k): v for k, v in weights.items()}
    try:
        module.load_state_dict(weights)
    except RuntimeError as err:
        raise ExportError(f"checkpoint {ckpt} does not match the model of config {cfg}: {err}") from err
    step = int(state.get("global_step", 0))
    return export_module(module, out_dir, corpus, config=cfg, metrics=metrics, overwrite=overwrite, step=step)


def export_untrained(
    configs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    overrides: Sequence[str] = (),
    metrics: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Export the system that config files build, without training: the off-the-shelf baseline
    (pretrained backbones as loaded, new layers as initialised under the config's
    ``seed_everything``, which LightningCLI applies before building the model).

    Args:
        configs: experiment YAML files, applied in order.
        out_dir: the export folder to create.
        overrides: dotted LightningCLI flags, e.g. ``["--model.similarity=cosine"]``
            (``joint_rag.config.override``); the export's ``config.yaml`` is the effective config.
        metrics: evaluation results for the model card.
        overwrite: replace an existing ``out_dir``.
    """
    check_out_dir(Path(out_dir), overwrite)
    cli = build_from_config(configs, overrides)
    effective = effective_config(cli)  # as `jrag fit --print_config` shows it
    return export_module(
        cli.model,
        out_dir,
        cli.datamodule.corpus,
        config=effective,
        metrics=metrics,
        overwrite=overwrite,
        step=0,
    )


def export_module(
    module: JointRAGModule | RAGSystem,
    out_dir: str | os.PathLike,
    corpus: Corpus | None = None,
    config: str | os.PathLike | dict | None = None,
    metrics: dict[str, Any] | None = None,
    overwrite: bool = False,
    step: int | None = None,
) -> Path:
    """Export an in-memory training module or system (``joint_rag.artifact.save_system``).

    Args:
        module: a ``JointRAGModule`` (its system is exported) or a ``RAGSystem``.
        out_dir: the export folder to create.
        corpus: passages to index (default: the system's attached corpus).
        config: experiment YAML path or dict, copied to ``config.yaml``.
        metrics: evaluation results for the model card.
        overwrite: replace an existing ``out_dir``.
        step: training step recorded (default: the module's global step).
    """
    if isinstance(module, JointRAGModule):
        if module.candidate_source != "index":
            raise ExportError(
                "only candidate_source='index' models can be exported (answering searches the index)"
            )
        system = module.system
        if step is None:
            step = int(module.trainer.global_step) if module._trainer is not None else 0
    else:
        system = module
    saved_corpus, saved_index, saved_memory = system.corpus, system.index, system.corpus_memory
    if corpus is not None:
        system.attach_corpus(corpus)
    try:
        return save_system(
            system, out_dir, config=config, metrics=metrics, step=step or 0, overwrite=overwrite
        )
    finally:
        system.corpus, system.index, system.corpus_memory = saved_corpus, saved_index, saved_memory
