"""``jrag capacity --dims 2 4 8 [--vectors 1 2 4] [--similarity cosine flat_cosine maxsim] --out FILE.json``."""

from __future__ import annotations

import json
from pathlib import Path

from joint_rag.commands.args import Parser, fail

PROG = "jrag capacity"


def main(argv: list[str]) -> int:
    parser = Parser(
        prog=PROG,
        description="The free-embedding experiment of LIMIT (arXiv 2508.21038): for each dimension d, the largest "
        "number of documents n for which directly optimised vectors make every one of the C(n, 2) top-2 sets "
        "retrievable, with M vectors of d/M dimensions under MaxSim or flattened cosine (joint_rag/capacity.py).",
    )
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8], help="total embedding dimensions d")
    parser.add_argument(
        "--vectors", type=int, nargs="+", default=[1], help="vectors per query and document M"
    )
    parser.add_argument(
        "--similarity",
        nargs="+",
        default=["cosine"],
        choices=["cosine", "flat_cosine", "maxsim"],
        help="scorers",
    )
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    parser.add_argument("--temperature", type=float, default=0.05, help="softmax temperature of the loss")
    parser.add_argument("--max-steps", type=int, default=4000, help="optimisation steps per trial at most")
    parser.add_argument(
        "--patience", type=int, default=10, help="checks (every 50 steps) without progress before giving up"
    )
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")
    parser.add_argument(
        "--raw-maxsim",
        action="store_true",
        help="MaxSim on raw dot products (default: unit vectors, as ColBERT)",
    )
    parser.add_argument("--n-max", type=int, default=4096, help="largest n tried")
    parser.add_argument(
        "--out", required=True, type=Path, help="JSON file to write (rewritten after every setting)"
    )
    parser.add_argument("--plot", type=Path, default=None, help="PNG of critical n against d")
    parser.add_argument(
        "--from", dest="inputs", type=Path, nargs="+", default=None, help="only plot these result JSON files"
    )
    args = parser.parse_args(argv)
    if args.inputs:
        from joint_rag.capacity import plot

        rows = []
        for f in args.inputs:
            data = json.loads(f.read_text())
            raw = not data["settings"].get("normalize_maxsim", True)
            rows += [{**r, "raw_maxsim": raw and r["similarity"] == "maxsim"} for r in data["results"]]
        plot(rows, args.plot or args.out)
        print(f"{len(rows)} settings -> {args.plot or args.out}")
        return 0
    if min(args.dims) < 1 or min(args.vectors) < 1:
        fail(PROG, "--dims and --vectors must be positive")

    from joint_rag.atomic import write_json
    from joint_rag.capacity import Settings, critical_n
    from joint_rag.provenance import machine

    settings = Settings(
        args.lr, args.temperature, args.max_steps, 50, args.patience, args.seed, not args.raw_maxsim
    )
    settings_out = dict(vars(settings))
    rows = []
    for sim in args.similarity:
        for M in args.vectors:
            if (sim == "cosine") != (M == 1):
                continue  # cosine is the single-vector scorer; the multi-vector ones need M > 1
            for d in args.dims:
                if d % M:
                    continue
                row = critical_n(d, M, sim, settings, args.n_max)
                rows.append(row)
                print(
                    f"{sim} M={M} d={d}: critical n {row['critical_n']} (LIMIT fit {row['limit_fit']:.1f})",
                    flush=True,
                )
                write_json(args.out, {"machine": machine("cpu"), "settings": settings_out, "results": rows})
    if not rows:
        fail(PROG, "no setting to run: cosine needs --vectors 1, flat_cosine/maxsim M > 1 dividing d")
    if args.plot is not None:
        from joint_rag.capacity import plot

        plot(rows, args.plot)
    print(json.dumps([{k: r[k] for k in ("similarity", "vectors", "d", "critical_n")} for r in rows]))
    return 0
