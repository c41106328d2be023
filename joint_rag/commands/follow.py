"""``jrag follow --model DIR (--pairs FILE.jsonl | --synthetic) [--n N] [--seed S] [--out JSON]``."""

from __future__ import annotations

import json
from pathlib import Path

from joint_rag.commands.args import Parser, fail

PROG = "jrag follow"


def main(argv: list[str]) -> int:
    parser = Parser(
        prog=PROG,
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
        fail(PROG, f"--model {args.model}: no such folder; export a model with `jrag export` first")

    from joint_rag.atomic import write_json
    from joint_rag.instructions import read_instruction_pairs, synthetic_instruction_pairs
    from joint_rag.pipeline import JointRAG

    if args.pairs is not None:
        pairs = read_instruction_pairs(args.pairs)
    else:
        pairs = synthetic_instruction_pairs(_export_knowledge_base(args.model), args.n, args.seed)
    rag = JointRAG.from_pretrained(args.model, device=args.device)
    unknown = sorted({pid for p in pairs for pid in p.changed} - set(rag.corpus.ids))
    if unknown:
        fail(PROG, f"{len(unknown)} changed passage ids are not in the export's corpus, e.g. {unknown[0]!r}")
    result = {
        "model": str(args.model),
        "pairs": str(args.pairs) if args.pairs else f"synthetic(n={args.n}, seed={args.seed})",
        **rag.instruction_following(pairs),
    }
    if args.out is not None:
        write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "per_query"}, indent=2))
    return 0


def _export_knowledge_base(folder: Path):
    """The fictional knowledge base an export was trained on, rebuilt from its config.yaml."""
    import yaml

    from joint_rag.artifact import CONFIG_FILE
    from joint_rag.data.synthetic import SyntheticSource

    path = folder / CONFIG_FILE
    try:
        source = yaml.safe_load(path.read_text())["data"]["source"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError) as err:
        fail(PROG, f"{path}: cannot read data.source ({err}); use --pairs with your own file")
    if not isinstance(source, dict) or not str(source.get("class_path", "")).endswith("SyntheticSource"):
        fail(PROG, f"{path}: data.source is not the built-in SyntheticSource; use --pairs with your own file")
    return SyntheticSource(**(source.get("init_args") or {})).build()
