"""The config layer: LightningCLI with the project's defaults, and building a system from configs.

``jrag fit|validate|test -c BASE.yaml [-c DELTA.yaml ...] [--key=value ...]`` is LightningCLI in
jsonargparse's ``omegaconf+`` mode: several ``-c`` files apply in order (a delta file holds only
what differs), dotted flags come last, and ``${...}`` interpolations are resolved once all of
them are merged (so ``${trainer.default_root_dir}`` in any file follows a command-line override,
and a delta file may refer to keys of its base). Defaults added here:

- ``trainer.log_every_n_steps: 1`` (runs on a CPU are tens of steps long);
- a ``CSVLogger`` under ``trainer.default_root_dir`` when ``trainer.logger`` is unset or true
  (``--tensorboard`` switches to ``TensorBoardLogger``; needs ``tensorboardX``); the run folder
  is printed at the end of ``fit``;
- a ``ModelCheckpoint(save_last="link")`` when checkpointing is on and no checkpoint callback is
  configured, so every run leaves ``<run folder>/checkpoints/last.ckpt``.

``build(configs, overrides)`` instantiates the module and data of configs without running
anything (exports, the quickstart, the ablation runner), with the same override mechanism.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

from jsonargparse import ActionYesNo
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI

from joint_rag.training.datamodule import RAGDataModule
from joint_rag.training.module import JointRAGModule

#: keys `jrag fit` writes into a run's config.yaml that only its subcommand takes
RUN_ONLY_KEYS = ("ckpt_path", "weights_only", "verbose", "return_predictions")


class JointRAGCLI(LightningCLI):
    """LightningCLI with the project's default logger and last checkpoint (see the module docstring)."""

    def __init__(self, *args: Any, run: bool = True, **kwargs: Any) -> None:
        self._builds_only = not run
        super().__init__(*args, run=run, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"trainer.log_every_n_steps": 1})  # CPU runs are short: log every step
        parser.add_argument(
            "--tensorboard",
            action=ActionYesNo,
            default=False,
            help="log to TensorBoard (needs tensorboardX) instead of the default CSV files",
        )
        if self._builds_only:  # a run's saved config.yaml also holds its subcommand's keys
            for key in RUN_ONLY_KEYS:
                parser.add_argument(f"--{key}", type=Any, default=None, help="(ignored when only building)")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self._get(self.config_init, "trainer", default={})
        root = config.get("default_root_dir") or os.getcwd()
        if config.get("logger") in (None, True):
            if self._get(self.config, "tensorboard"):
                from pytorch_lightning.loggers import TensorBoardLogger

                kwargs["logger"] = TensorBoardLogger(save_dir=root, name="lightning_logs")
            else:
                from pytorch_lightning.loggers import CSVLogger

                kwargs["logger"] = CSVLogger(save_dir=root, name="lightning_logs")
        callbacks = list(config.get("callbacks") or [])
        if config.get("enable_checkpointing") is not False and not any(
            isinstance(c, ModelCheckpoint) for c in callbacks
        ):
            kwargs["callbacks"] = [*callbacks, ModelCheckpoint(save_last="link")]
        return super().instantiate_trainer(**kwargs)

    def _parse_ckpt_path(self) -> None:
        # before LightningCLI reads the checkpoint's hyperparameters (and before anything else)
        sub = self.config.get("subcommand")
        if sub and self.config[sub].get("ckpt_path") is not None:
            root = self.config[sub].get("trainer.default_root_dir") or os.getcwd()
            self.config[sub]["ckpt_path"] = resolve_ckpt_path(self.config[sub]["ckpt_path"], root, sub)
        super()._parse_ckpt_path()

    def after_fit(self) -> None:
        trainer = self.trainer
        ckpt = trainer.checkpoint_callback
        last = getattr(ckpt, "last_model_path", "") if ckpt is not None else ""
        print(f"run folder: {trainer.log_dir}" + (f"   last checkpoint: {last}" if last else ""), flush=True)


def resolve_ckpt_path(ckpt_path: str, root: str | os.PathLike, subcommand: str = "fit") -> str | None:
    """The checkpoint ``--ckpt_path`` names, checked before Lightning reads it.

    ``last``: the newest ``last.ckpt`` of any earlier run under ``root`` (``trainer.default_root_dir``:
    every run writes its own ``lightning_logs/version_*``, so Lightning's own lookup, which only
    searches the new run's folder, never finds one); when there is none, ``fit`` says so in one
    line and starts from step 0, the other commands refuse. Lightning's other keywords (``best``,
    ``hpc``, ``registry``) pass through. A path must exist and be a complete checkpoint (a zip
    archive whose directory is intact: a truncated file is caught here, not mid-restore).

    Raises:
        JointRAGError: a missing or unreadable checkpoint file (named), or no last checkpoint.
    """
    import zipfile
    from pathlib import Path

    from joint_rag.errors import JointRAGError

    if ckpt_path in ("best", "hpc") or str(ckpt_path).startswith("registry"):
        return ckpt_path
    if ckpt_path == "last":
        found = [p for p in Path(root).glob("**/last.ckpt") if p.exists()]  # a dangling link does not count
        if not found:
            if subcommand != "fit":
                raise JointRAGError(f"--ckpt_path last: no last.ckpt under {root}; pass a checkpoint file")
            print(f"--ckpt_path last: no last.ckpt under {root} yet: training from step 0", flush=True)
            return None
        newest = max(found, key=lambda p: p.resolve().stat().st_mtime)
        print(f"resuming from {newest.resolve()}", flush=True)
        ckpt_path = str(newest.resolve())
    path = Path(ckpt_path)
    if not path.is_file():
        raise JointRAGError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise JointRAGError(
            f"--ckpt_path {ckpt_path}: not a complete checkpoint ({err}); it may be truncated: "
            "use an earlier checkpoint"
        ) from err
    if not any(n.endswith("/data.pkl") for n in names):
        raise JointRAGError(f"--ckpt_path {ckpt_path}: a zip archive but not a torch checkpoint")
    try:
        import torch

        torch._C.PyTorchFileReader(str(path))  # what torch.load opens first: its record directory
    except (OSError, RuntimeError) as err:
        raise JointRAGError(f"--ckpt_path {ckpt_path}: not a readable checkpoint ({err})") from err
    return str(path)


def make_cli(args: Sequence[str] | None = None, run: bool = True) -> JointRAGCLI:
    """The project's LightningCLI; ``run=False`` builds model, data and trainer only."""
    with warnings.catch_warnings():  # a command's own sys.argv is not for LightningCLI
        warnings.filterwarnings("ignore", message=".*args parameter is intended.*")
        return JointRAGCLI(
            JointRAGModule,
            RAGDataModule,
            parser_kwargs={"parser_mode": "omegaconf+"},
            save_config_kwargs={"overwrite": True},
            args=None if args is None else list(args),
            run=run,
            auto_configure_optimizers=False,
        )


def override(key: str, value: Any) -> str:
    """A dotted LightningCLI flag that sets ``key`` to ``value``: a string as it is, anything else
    as JSON (so mappings, lists and null replace the whole value at that key), e.g.
    ``override("model.lr", 1e-3)`` -> ``--model.lr=0.001``."""
    return f"--{key}={value if isinstance(value, str) else json.dumps(value)}"


def config_args(configs: Sequence[str | os.PathLike], overrides: Sequence[str] = ()) -> list[str]:
    """``-c`` for each config file in order, then the override flags."""
    return [arg for c in configs for arg in ("-c", str(c))] + list(overrides)


def build(configs: Sequence[str | os.PathLike], overrides: Sequence[str] = ()) -> JointRAGCLI:
    """Instantiate (without running) what config files + overrides describe: ``.model``,
    ``.datamodule``, ``.trainer``. A config that does not parse exits with jsonargparse's message."""
    return make_cli(config_args(configs, overrides), run=False)


def effective_config(cli: JointRAGCLI) -> dict[str, Any]:
    """The merged config of a built CLI as plain data (what ``jrag fit --print_config`` shows),
    without the ``-c`` paths and the run-only keys: a YAML that rebuilds the same system."""
    config = cli.config.as_dict()
    for key in ("config", "tensorboard", *RUN_ONLY_KEYS):
        config.pop(key, None)
    return json.loads(json.dumps(config, default=str))
