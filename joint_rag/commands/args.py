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
