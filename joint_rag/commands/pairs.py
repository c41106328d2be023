"""``jrag pairs --beir DIR [--split test] [--kind both] [--seed S] [--max-df F] [--n N] --out FILE.jsonl``."""

from __future__ import annotations

from pathlib import Path

from joint_rag.commands.args import Parser, fail

PROG = "jrag pairs"


def main(argv: list[str]) -> int:
    parser = Parser(
        prog=PROG,
        description="Write instruction pairs over a BEIR folder's queries (joint_rag/data/term_instructions.py): "
        "the changed instruction excludes, or requires, a rare term of the gold passages; changed = the gold "
        "passages it makes irrelevant. Evaluate them with `jrag follow --model EXPORT --pairs FILE [--corpus DIR]`.",
    )
    parser.add_argument(
        "--beir", required=True, type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"
    )
    parser.add_argument("--split", default="test", help="qrels split whose queries get pairs (default: test)")
    parser.add_argument(
        "--kind", default="both", choices=["exclude", "require", "both"], help="instruction kind"
    )
    parser.add_argument("--seed", type=int, default=0, help="which qualifying term is chosen")
    parser.add_argument(
        "--max-df", type=float, default=0.02, help="a term occurs in at most this fraction of passages"
    )
    parser.add_argument("--n", type=int, default=None, help="keep at most this many pairs")
    parser.add_argument("--out", required=True, type=Path, help="JSONL file to write")
    args = parser.parse_args(argv)
    if not args.beir.is_dir():
        fail(
            PROG,
            f"--beir {args.beir}: folder not found; expected a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)",
        )

    from collections import Counter

    from joint_rag.data.formats import BeirSource
    from joint_rag.data.reading import DataError
    from joint_rag.data.term_instructions import term_instruction_pairs, write_instruction_pairs

    try:
        source = BeirSource(args.beir)
        corpus = source.read_corpus()
        examples = source.read_qrels(args.split, corpus, source.read_queries())
        pairs = term_instruction_pairs(corpus, examples, args.kind, args.seed, args.max_df, args.n)
    except (DataError, ValueError) as err:
        fail(PROG, str(err))
    if not pairs:
        fail(PROG, f"no query of {args.beir} ({args.split}) has a qualifying term; raise --max-df")
    write_instruction_pairs(args.out, pairs)
    kinds = Counter(p.query_id.rsplit(":", 1)[1] for p in pairs)
    print(
        f"{len(pairs)} pairs of {len(examples)} queries ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}; "
        f"{sum(len(p.changed) for p in pairs)} changed passages) -> {args.out}"
    )
    return 0
