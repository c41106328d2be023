"""The ``jrag`` command.

``jrag fit|validate|test -c experiments/X.yaml`` runs LightningCLI (omegaconf parser mode,
so ``${...}`` interpolation works). Other subcommands (export, answer, quickstart, ...) are
plain functions registered in ``EXTRA_COMMANDS``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pytorch_lightning.cli import LightningCLI  # noqa: E402

from joint_rag.data.datamodule import RAGDataModule  # noqa: E402
from joint_rag.training.module import JointRAGModule  # noqa: E402

EXTRA_COMMANDS: dict[str, Callable[[list[str]], int | None]] = {}


def extra_command(name: str):
    def register(fn):
        EXTRA_COMMANDS[name] = fn
        return fn

    return register


class JointRAGCLI(LightningCLI):
    """LightningCLI with the project's defaults and links."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"trainer.logger": False, "trainer.enable_checkpointing": True})


def make_cli(args: list[str] | None = None, run: bool = True) -> JointRAGCLI:
    return JointRAGCLI(
        JointRAGModule,
        RAGDataModule,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def main(argv: list[str] | None = None) -> int:
    explicit = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    # register extra commands (imported lazily: they pull in heavier modules)
    from joint_rag import commands, quickstart, studies  # noqa: F401

    if argv and argv[0] in EXTRA_COMMANDS:
        return int(EXTRA_COMMANDS[argv[0]](argv[1:]) or 0)
    make_cli(argv if explicit else None)
    return 0


if __name__ == "__main__":
    # under `python -m`, this file runs as __main__; dispatch through the importable module so
    # commands registered on joint_rag.cli are found
    from joint_rag.cli import main as _main

    sys.exit(_main())
