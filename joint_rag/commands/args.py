"""argparse for the subcommands: a bad command line is one ``jrag CMD: error: ...`` line, exit 2."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, message)


def fail(prog: str, message: str) -> NoReturn:
    """Print ``PROG: error: MESSAGE`` and exit 2."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)


def set_flag(prog: str, item: str) -> str:
    """A ``--set KEY=VALUE`` item (VALUE is YAML) as the LightningCLI flag ``--KEY=<VALUE as JSON>``
    (``config.override``); a malformed item is one error line naming it."""
    import yaml

    from joint_rag.config import override

    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        fail(prog, f"--set {item!r}: expected KEY=VALUE, e.g. model.similarity=cosine")
    try:
        return override(key.strip(), yaml.safe_load(value))
    except yaml.YAMLError as err:
        fail(prog, f"--set {item!r}: VALUE is not YAML ({err})")
