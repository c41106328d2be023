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
    """``jrag export --ckpt PATH --out DIR [--config CFG] [--metrics JSON] [--overwrite]``, or
    ``jrag export --untrained --config CFG --out DIR [--set KEY=VALUE ...]`` (no training)."""
    prog = "jrag export"
    parser = _Parser(
        prog=prog,
        description="Export a trained checkpoint into a self-describing folder (safetensors, JSON, "
        "tokenizers, faiss index, corpus, model card) that JointRAG.from_pretrained loads.",
    )
    parser.add_argument("--ckpt", type=Path, help="Lightning .ckpt written by `jrag fit`")
    parser.add_argument(
        "--untrained",
        action="store_true",
        help="export the system --config builds, without training (an off-the-shelf baseline)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --untrained: set a dotted config key first (VALUE is YAML), e.g. "
        "--set model.similarity=cosine; repeatable",
    )
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
    if args.untrained == (args.ckpt is not None):
        _fail(prog, "pass either --ckpt (a trained run) or --untrained with --config")
    if args.set and not args.untrained:
        _fail(prog, "--set applies to --untrained exports only")
    if args.untrained and args.config is None:
        _fail(prog, "--untrained needs --config (the experiment YAML that builds the system)")
    if args.ckpt is not None and not args.ckpt.is_file():
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

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(prog, f"--set {item!r}: expected KEY=VALUE, e.g. model.similarity=cosine")
        import yaml

        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            _fail(prog, f"--set {item!r}: VALUE is not YAML ({err})")

    from joint_rag.export import ExportError, export_checkpoint, export_untrained

    try:
        if args.untrained:
            out = export_untrained(
                args.config, args.out, overrides, metrics=metrics, overwrite=args.overwrite
            )
        else:
            out = export_checkpoint(
                args.ckpt, args.out, args.config, metrics=metrics, overwrite=args.overwrite
            )
    except ExportError as err:
        _fail(prog, str(err))
    print(f"exported {args.ckpt or f'{args.config} (untrained)'} -> {out}")
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


# ----------------------------------------------------------------------------- follow
@extra_command("follow")
def follow_command(argv: list[str]) -> int:
    """``jrag follow --model DIR (--pairs FILE.jsonl | --synthetic) [--n N] [--seed S] [--out JSON]``."""
    prog = "jrag follow"
    parser = _Parser(
        prog=prog,
        description="Instruction following of an exported retriever: p-MRR (FollowIR) over instruction "
        "pairs, each a query under an original and a changed instruction that makes some passages "
        "irrelevant. Positive: those passages move down; 0: the instruction changes nothing.",
    )
    parser.add_argument("--model", required=True, type=Path, help="export folder (`jrag export`)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--pairs",
        type=Path,
        help="JSONL: query, instruction_og, instruction_new, changed (passage ids), optional query_id",
    )
    source.add_argument(
        "--synthetic",
        action="store_true",
        help="pairs built from the export's own fictional knowledge base (its config's SyntheticSource)",
    )
    parser.add_argument("--n", type=int, default=None, help="--synthetic: at most this many pairs")
    parser.add_argument("--seed", type=int, default=0, help="--synthetic: seed of the pairs")
    parser.add_argument("--device", default="cpu", help="torch device for the models (default: cpu)")
    parser.add_argument("--out", type=Path, default=None, help="also write the full result as JSON here")
    args = parser.parse_args(argv)
    if not args.model.is_dir():
        _fail(prog, f"--model {args.model}: no such folder; export a model with `jrag export` first")

    from joint_rag.data.formats import DataError
    from joint_rag.instructions import read_instruction_pairs, synthetic_instruction_pairs
    from joint_rag.pipeline import ExportFormatError, JointRAG

    try:
        if args.pairs is not None:
            pairs = read_instruction_pairs(args.pairs)
        else:
            pairs = synthetic_instruction_pairs(_export_knowledge_base(args.model, prog), args.n, args.seed)
        rag = JointRAG.from_pretrained(args.model, device=args.device)
    except (DataError, ExportFormatError, ValueError) as err:
        _fail(prog, str(err))
    unknown = sorted({pid for p in pairs for pid in p.changed} - set(rag.corpus.ids))
    if unknown:
        _fail(prog, f"{len(unknown)} changed passage ids are not in the export's corpus, e.g. {unknown[0]!r}")

    result = {
        "model": str(args.model),
        "pairs": str(args.pairs) if args.pairs else f"synthetic(n={args.n}, seed={args.seed})",
        **rag.instruction_following(pairs),
    }
    if args.out is not None:
        from joint_rag.quickstart import write_json_atomic

        write_json_atomic(args.out, result)
    summary = {k: v for k, v in result.items() if k != "per_query"}
    print(json.dumps(summary, indent=2))
    return 0


def _export_knowledge_base(folder: Path, prog: str):
    """The fictional knowledge base an export was trained on, rebuilt from its config.yaml."""
    import yaml

    from joint_rag.data.synthetic import SyntheticSource
    from joint_rag.export import CONFIG_FILE

    path = folder / CONFIG_FILE
    try:
        source = yaml.safe_load(path.read_text())["data"]["source"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        _fail(prog, f"{path}: cannot read data.source ({err}); use --pairs with your own file")
    if not isinstance(source, dict) or not str(source.get("class_path", "")).endswith("SyntheticSource"):
        _fail(
            prog, f"{path}: data.source is not the built-in SyntheticSource; use --pairs with your own file"
        )
    return SyntheticSource(**(source.get("init_args") or {})).build()
