"""``jrag follow --model DIR (--pairs FILE.jsonl [--corpus DIR] | --followir DIR | --synthetic) ...``."""

from __future__ import annotations

import json
import math
from pathlib import Path

from joint_rag.commands.args import Parser, fail

PROG = "jrag follow"


def main(argv: list[str]) -> int:
    parser = Parser(
        prog=PROG,
        description="Instruction following of an exported retriever: p-MRR (FollowIR) over instruction "
        "pairs, each a query under an original and a changed instruction that makes some passages "
        "irrelevant. Positive: those passages move down; 0: the instruction changes nothing. Pairs with "
        "judgements also get nDCG@10 under the original and under the changed instruction.",
    )
    parser.add_argument("--model", required=True, type=Path, help="export folder (`jrag export`)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--pairs",
        type=Path,
        help="JSONL: query (or query_og + query_new), instruction_og, instruction_new, changed or "
        "relevant_og + relevant_new, optional query_id and candidates",
    )
    source.add_argument(
        "--followir",
        type=Path,
        help="a FollowIR / MTEB instruction folder (corpus.jsonl, queries.jsonl with instruction_og and "
        "instruction_changed, qrels_og/, qrels_changed/, optional top_ranked.jsonl): its corpus is indexed",
    )
    source.add_argument(
        "--synthetic",
        action="store_true",
        help="pairs built from the export's own fictional knowledge base (its config's SyntheticSource)",
    )
    parser.add_argument("--split", default="test", help="--followir: the qrels split (default: test)")
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="--pairs: index this BEIR folder's corpus.jsonl instead of the export's",
    )
    parser.add_argument("--n", type=int, default=None, help="--synthetic: at most this many pairs")
    parser.add_argument("--seed", type=int, default=0, help="--synthetic: seed of the pairs")
    parser.add_argument("--device", default="cpu", help="torch device for the models (default: cpu)")
    parser.add_argument("--out", type=Path, default=None, help="also write the full result as JSON here")
    parser.add_argument(
        "--per-query",
        type=Path,
        default=None,
        help="write one JSON line per pair (p-MRR, nDCG@10 on each side, moves)",
    )
    args = parser.parse_args(argv)
    if not args.model.is_dir():
        fail(PROG, f"--model {args.model}: no such folder; export a model with `jrag export` first")
    if args.corpus is not None and args.pairs is None:
        fail(PROG, "--corpus goes with --pairs (--followir brings its own corpus)")

    from joint_rag.atomic import write_json, write_jsonl
    from joint_rag.data.followir import read_followir
    from joint_rag.data.formats import BeirSource
    from joint_rag.data.reading import DataError
    from joint_rag.gap import bootstrap_mean
    from joint_rag.instructions import read_instruction_pairs, synthetic_instruction_pairs
    from joint_rag.pipeline import JointRAG

    corpus = None
    try:
        if args.followir is not None:
            corpus, pairs = read_followir(args.followir, args.split)
        elif args.pairs is not None:
            pairs = read_instruction_pairs(args.pairs)
            if args.corpus is not None:
                corpus = BeirSource(args.corpus).read_corpus()
        else:
            pairs = synthetic_instruction_pairs(_export_knowledge_base(args.model), args.n, args.seed)
    except DataError as err:
        fail(PROG, str(err))
    rag = JointRAG.from_pretrained(args.model, device=args.device)
    if corpus is not None:
        rag.system.attach_corpus(corpus)
    where = "the export's corpus" if corpus is None else f"the corpus of {args.followir or args.corpus}"
    ids = set(rag.corpus.ids)
    unknown = sorted(
        {
            pid
            for p in pairs
            for pid in (*p.changed, *(p.relevant_og or {}), *(p.relevant_new or {}), *(p.candidates or ()))
        }
        - ids
    )
    if unknown:
        fail(PROG, f"{len(unknown)} passage ids of the pairs are not in {where}, e.g. {unknown[0]!r}")
    if args.pairs:
        name = str(args.pairs)
    elif args.followir:
        name = f"{args.followir} ({args.split})"
    else:
        name = f"synthetic(n={args.n}, seed={args.seed})"
    following = rag.instruction_following(pairs)
    result = {"model": str(args.model), "pairs": name, **_finite(following)}
    records = result.pop("records")
    # 95% percentile bootstrap over the pairs (seeded), for each figure where it is defined
    result["ci95"] = {
        key: bootstrap_mean([r[key] for r in following["records"] if not math.isnan(r[key])])["ci95"]
        for key in ("p_mrr", "ndcg@10_og", "ndcg@10_new")
        if any(not math.isnan(r[key]) for r in following["records"])
    }
    if args.per_query is not None:
        write_jsonl(args.per_query, records)
    if args.out is not None:
        write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "per_query"}, indent=2))
    return 0


def _finite(obj):
    """nan (undefined: no changed passage, no judged relevant passage) as JSON null."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


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
