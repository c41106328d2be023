"""The ``jrag`` command: one explicit table of subcommands, and one-line errors.

Each entry names the function that runs it (imported only when chosen, so ``jrag --help`` is
fast) and its help line. Nothing imports this module.

Bad data, bad backbones, bad exports and bad config values (``joint_rag.errors.JointRAGError``
and ``ValueError``) print ``jrag <command>: error: <message>`` and exit 2; ``--traceback`` (any
position) or ``JRAG_TRACEBACK=1`` shows the full trace instead.
"""

from __future__ import annotations

import importlib
import os
import sys

import joint_rag

#: name -> ("module:function", help line)
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": (
        "joint_rag.commands.lightning:fit",
        "train from experiment YAML(s): -c BASE [-c DELTA] [--key=value]",
    ),
    "validate": (
        "joint_rag.commands.lightning:validate",
        "evaluate a config or checkpoint on the validation split",
    ),
    "test": ("joint_rag.commands.lightning:test", "evaluate a config or checkpoint on the test split"),
    "quickstart": ("joint_rag.commands.quickstart:main", "the main job: evaluate, train, evaluate, export"),
    "ablate": ("joint_rag.commands.ablate:main", "run an ablation grid (objectives x seeds) and report it"),
    "export": (
        "joint_rag.commands.export:main",
        "turn a checkpoint (or an untrained config) into an export folder",
    ),
    "answer": ("joint_rag.commands.answer:main", "answer questions with an exported model"),
    "follow": ("joint_rag.commands.follow:main", "instruction following (p-MRR) of an exported retriever"),
    "pairs": (
        "joint_rag.commands.pairs:main",
        "write instruction pairs over a BEIR folder (exclude/require a term)",
    ),
    "evaluate": (
        "joint_rag.commands.evaluate:main",
        "retrieval metrics of an exported retriever on any BEIR folder (its corpus indexed)",
    ),
    "capacity": (
        "joint_rag.commands.capacity:main",
        "free-embedding capacity (LIMIT): largest n with every top-2 set retrievable at dimension d",
    ),
    "synthesize": (
        "joint_rag.commands.synthesize:main",
        "synthetic queries and instructions from a domain description (an LM writes them)",
    ),
    "gap": (
        "joint_rag.commands.gap:main",
        "usefulness gap: similarity vs the generator's per-passage answer likelihood",
    ),
}
TRACEBACK_FLAG, TRACEBACK_ENV = "--traceback", "JRAG_TRACEBACK"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        f"usage: jrag [--traceback] COMMAND [ARGS]   (joint-rag {joint_rag.__version__})",
        "",
        "Train a retriever and a generator together. Commands:",
        *(f"  {name:<{width}}  {help_line}" for name, (_, help_line) in COMMANDS.items()),
        "",
        "`jrag COMMAND --help` shows a command's arguments. --traceback (or JRAG_TRACEBACK=1) shows full",
        "tracebacks instead of one-line errors.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    show_trace = TRACEBACK_FLAG in argv or os.environ.get(TRACEBACK_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != TRACEBACK_FLAG]
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"joint-rag {joint_rag.__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"jrag: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}\n")
        return 2
    module, function = COMMANDS[name][0].split(":")
    command = getattr(importlib.import_module(module), function)
    try:
        return int(command(rest) or 0)
    except ValueError as err:  # JointRAGError (data, backbones, exports, grids) and config values
        if show_trace:
            raise
        sys.stderr.write(f"jrag {name}: error: {one_line(err)}\n")
        return 2


def one_line(err: BaseException) -> str:
    """The error's message on one line. jsonargparse's "Does not validate against any of the
    Union subtypes" (an ``X | None`` argument whose class refused its arguments) keeps only the
    class's own reasons, without the subtype list, the NoneType alternative and the value dump."""
    lines = [line.strip() for line in str(err).strip().splitlines()]
    if lines and lines[0].startswith("Does not validate against any of the Union subtypes"):
        reasons = [
            line[2:]
            for line in lines
            if line.startswith("- ") and not line.startswith("- Expected a <class 'NoneType'>")
        ]
        if reasons:
            return "; ".join(reasons)
    return " ".join(lines) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
