"""Extra ``jrag`` subcommands beyond fit/validate/test.

Each command is one self-contained function registered with ``extra_command``; heavy modules
are imported inside it. A usage error prints one ``jrag CMD: error: ...`` line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from joint_rag.cli import extra_command


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        _fail(self.prog, message)


def _fail(prog: str, message: str) -> NoReturn:
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)


# ----------------------------------------------------------------------------- export
@extra_command("export")
def export_command(argv: list[str]) -> int:
    """``jrag export --ckpt PATH --out DIR [--config CFG] [--metrics JSON] [--overwrite]``."""
    prog = "jrag export"
    parser = _Parser(
        prog=prog,
        description="Export a trained checkpoint into a self-describing folder (safetensors, JSON, "
        "tokenizers, faiss index, corpus, model card) that JointRAG.from_pretrained loads.",
    )
    parser.add_argument("--ckpt", required=True, type=Path, help="Lightning .ckpt written by `jrag fit`")
    parser.add_argument("--out", required=True, type=Path, help="export folder to create")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="experiment YAML (default: the config.yaml saved with the run)",
    )
    parser.add_argument(
        "--metrics",
        type=Path,
        default=None,
        help='JSON file for the model card, e.g. {"before": {...}, "after": {...}}',
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    args = parser.parse_args(argv)
    if not args.ckpt.is_file():
        _fail(prog, f"--ckpt {args.ckpt}: no such file; pass the .ckpt written by `jrag fit`")
    if args.config is not None and not args.config.is_file():
        _fail(prog, f"--config {args.config}: no such file")
    metrics = None
    if args.metrics is not None:
        try:
            metrics = json.loads(args.metrics.read_text())
        except (OSError, json.JSONDecodeError) as err:
            _fail(prog, f"--metrics {args.metrics}: not a readable JSON file ({err})")
        if not isinstance(metrics, dict):
            _fail(prog, f"--metrics {args.metrics}: expected a JSON object of metrics")

    from joint_rag.export import ExportError, export_checkpoint

    try:
        out = export_checkpoint(args.ckpt, args.out, args.config, metrics=metrics, overwrite=args.overwrite)
    except ExportError as err:
        _fail(prog, str(err))
    print(f"exported {args.ckpt} -> {out}")
    return 0


# ----------------------------------------------------------------------------- answer
@extra_command("answer")
def answer_command(argv: list[str]) -> int:
    """``jrag answer --model DIR [--instruction TEXT] [--json] "question" [...]``."""
    prog = "jrag answer"
    parser = _Parser(prog=prog, description="Answer questions with an exported model (`jrag export`).")
    parser.add_argument("--model", required=True, type=Path, help="export folder")
    parser.add_argument("questions", nargs="+", help="one or more questions")
    parser.add_argument("--instruction", default=None, help="instruction applied to every question")
    parser.add_argument("--device", default="cpu", help="torch device for the models (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    empty = [i + 1 for i, q in enumerate(args.questions) if not q.strip()]
    if empty:
        _fail(prog, f"question {empty[0]} is empty; pass the question text in quotes")
    if not args.model.is_dir():
        _fail(prog, f"--model {args.model}: no such folder; export a model with `jrag export` first")

    from joint_rag.pipeline import ExportFormatError, JointRAG

    try:
        rag = JointRAG.from_pretrained(args.model, device=args.device)
    except ExportFormatError as err:
        _fail(prog, str(err))
    instructions = [args.instruction] * len(args.questions) if args.instruction else None
    results = rag.answer(args.questions, instructions)
    if args.json:
        print(json.dumps([{"question": q, **r} for q, r in zip(args.questions, results)], indent=2))
    else:
        _print_answers(args.questions, results)
    return 0


def _print_answers(questions: list[str], results: list[dict]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    for question, result in zip(questions, results):
        console.print(f"[bold]Q:[/bold] {escape(question)}")
        console.print(
            f"[bold green]A:[/bold green] {escape(result['answer']) or '[dim](empty answer)[/dim]'}"
        )
        table = Table(show_header=True, header_style="bold", expand=False)
        for col in ("#", "passage", "score", "text"):
            table.add_column(col)
        for rank, p in enumerate(result["passages"], start=1):
            text = f"{p['title']}: {p['text']}" if p["title"] else p["text"]
            short = text if len(text) <= 160 else text[:157] + "..."
            table.add_row(str(rank), escape(p["id"]), f"{p['score']:.4f}", escape(short))
        console.print(table)
