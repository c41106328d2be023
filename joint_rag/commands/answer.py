"""``jrag answer --model DIR [--instruction TEXT] [--json] "question" [...]``."""

from __future__ import annotations

import json
from pathlib import Path

from joint_rag.commands.args import Parser, fail

PROG = "jrag answer"


def main(argv: list[str]) -> int:
    parser = Parser(prog=PROG, description="Answer questions with an exported model (`jrag export`).")
    parser.add_argument("--model", required=True, type=Path, help="export folder")
    parser.add_argument("questions", nargs="+", help="one or more questions")
    parser.add_argument("--instruction", default=None, help="instruction applied to every question")
    parser.add_argument("--device", default="cpu", help="torch device for the models (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    empty = [i + 1 for i, q in enumerate(args.questions) if not q.strip()]
    if empty:
        fail(PROG, f"question {empty[0]} is empty; pass the question text in quotes")
    if not args.model.is_dir():
        fail(PROG, f"--model {args.model}: no such folder; export a model with `jrag export` first")

    from joint_rag.pipeline import JointRAG

    rag = JointRAG.from_pretrained(args.model, device=args.device)
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
