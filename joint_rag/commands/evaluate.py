"""``jrag evaluate --model DIR --beir DIR [--split test] [--recall-at 1 5] [--out JSON] [--per-query JSONL]``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from joint_rag.commands.args import Parser, fail

PROG = "jrag evaluate"


def main(argv: list[str]) -> int:
    parser = Parser(
        prog=PROG,
        description="Retrieval metrics of an exported retriever on any BEIR folder: its corpus is indexed with "
        "the export's encoders and every query of the qrels split is ranked (recall@k, MRR@k, nDCG@k with "
        "graded qrels, 95% bootstrap intervals over the queries). Queries' optional `instruction` fields "
        "are used. E.g. a retriever trained on generated LIMIT-style data, evaluated on LIMIT-small.",
    )
    parser.add_argument("--model", required=True, type=Path, help="export folder (`jrag export`)")
    parser.add_argument(
        "--beir", required=True, type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"
    )
    parser.add_argument("--split", default="test", help="qrels split (default: test)")
    parser.add_argument("--recall-at", type=int, nargs="+", default=[1, 5, 10], help="recall cut-offs")
    parser.add_argument("--mrr-at", type=int, default=10, help="MRR cut-off")
    parser.add_argument("--ndcg-at", type=int, default=10, help="nDCG cut-off")
    parser.add_argument("--batch-size", type=int, default=64, help="queries per search")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    parser.add_argument("--per-query", type=Path, default=None, help="write one JSON line per query")
    args = parser.parse_args(argv)
    if not args.model.is_dir():
        fail(PROG, f"--model {args.model}: no such folder; export a model with `jrag export` first")
    if not args.beir.is_dir():
        fail(
            PROG,
            f"--beir {args.beir}: folder not found; expected a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)",
        )
    if min(args.recall_at + [args.mrr_at, args.ndcg_at]) < 1:
        fail(PROG, "cut-offs must be >= 1")

    from joint_rag.atomic import write_json, write_jsonl
    from joint_rag.data.formats import BeirSource
    from joint_rag.data.reading import DataError
    from joint_rag.gap import bootstrap_mean
    from joint_rag.pipeline import JointRAG
    from joint_rag.provenance import machine
    from joint_rag.training.metrics import RetrievalMetrics

    try:
        source = BeirSource(args.beir)
        corpus = source.read_corpus()
        examples = source.read_qrels(args.split, corpus, source.read_queries())
    except DataError as err:
        fail(PROG, str(err))
    rag = JointRAG.from_pretrained(args.model, device=args.device)
    rag.system.attach_corpus(corpus)
    t0 = time.perf_counter()
    rag.system.build_index()
    index_s = time.perf_counter() - t0
    metrics = RetrievalMetrics(tuple(args.recall_at), args.mrr_at, args.ndcg_at)
    depth = min(len(corpus), max(*args.recall_at, args.mrr_at, args.ndcg_at))
    records = []
    t0 = time.perf_counter()
    for i in range(0, len(examples), args.batch_size):
        batch = examples[i : i + args.batch_size]
        ranked = [
            ids for ids, _ in rag.system.rank([e.query for e in batch], [e.instruction for e in batch], depth)
        ]
        gold = [e.relevance for e in batch]
        metrics.update(ranked, gold)
        for ex, values in zip(batch, metrics.per_query(ranked, gold)):
            records.append({"query_id": ex.example_id, **(values or {})})
    search_s = time.perf_counter() - t0
    means = {k: float(v) for k, v in metrics.compute().items()}
    result = {
        "model": str(args.model),
        "beir": str(args.beir),
        "split": args.split,
        "queries": len(records),
        "passages": len(corpus),
        **means,
        "ci95": {k: bootstrap_mean([r[k] for r in records if k in r])["ci95"] for k in means},
        "index_seconds": round(index_s, 2),
        "search_seconds": round(search_s, 2),
        "machine": machine(args.device),
    }
    if args.per_query is not None:
        write_jsonl(args.per_query, records)
    if args.out is not None:
        write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0
