"""``jrag ablate -c GRID.yaml [--only VARIANT ...] [--report-only]`` (``joint_rag.ablation``; the
report with paired bootstrap intervals against the grid's baseline row: ``joint_rag.report``)."""

from __future__ import annotations

import time

from joint_rag.commands.args import Parser, fail

PROG = "jrag ablate"


def main(argv: list[str]) -> int:
    parser = Parser(
        prog=PROG, description="Run an ablation grid: every variant x seed as a fit + validation."
    )
    parser.add_argument("-c", "--config", required=True, help="ablation grid YAML")
    parser.add_argument("--only", nargs="*", help="run only these variants (others still reported if done)")
    parser.add_argument(
        "--seeds",
        nargs="*",
        type=int,
        help="run only these of the grid's seeds (others still reported if done; resume later with more)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: write results.md/.csv/.json/.png from the runs finished so far",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        help="with --report-only: compare every row with this one instead of the grid's baseline "
        "(written to OUT_DIR/vs_ROW/, next to the grid's own report)",
    )
    args = parser.parse_args(argv)

    from joint_rag.ablation import (
        backfill_records,
        finished,
        finished_questions,
        load_grid,
        run_one,
        stale_records,
    )
    from joint_rag.report import write_results

    grid = load_grid(args.config)
    unknown = sorted(set(args.only or []) - set(grid.variants))
    if unknown:
        fail(PROG, f"--only: unknown variants {unknown}; the grid has {list(grid.variants)}")
    if args.baseline is not None and not args.report_only:
        fail(
            PROG, "--baseline goes with --report-only (a grid's runs are compared with its own baseline row)"
        )
    if args.baseline is not None and args.baseline not in grid.variants:
        fail(PROG, f"--baseline: {args.baseline!r} is not a row of the grid; rows: {list(grid.variants)}")
    foreign = sorted(set(args.seeds or []) - set(grid.seeds))
    if foreign:
        fail(PROG, f"--seeds: {foreign} are not seeds of the grid; it has {grid.seeds}")
    t0 = time.perf_counter()
    for variant, seed in backfill_records(grid):
        print(
            f"[jrag ablate] recorded {variant} seed {seed} in {grid.record_path(variant, seed)}", flush=True
        )
    results = finished(grid)
    if args.report_only:
        if not results:
            where = grid.out_dir / "runs"
            fail(
                PROG,
                f"no finished runs under {where}"
                + (f" nor records under {grid.records}" if grid.records else ""),
            )
        wall = sum(float(r.get("wall_seconds", 0.0)) for r in results.values())  # the runs' own times
    else:
        for variant, seed in grid.runs():
            if (variant, seed) in results or (args.only and variant not in args.only):
                continue
            if args.seeds and seed not in args.seeds:
                continue
            print(f"[jrag ablate] {variant} seed {seed}", flush=True)
            results[(variant, seed)] = run_one(grid, variant, seed)
        wall = time.perf_counter() - t0
    stale = stale_records(grid)
    notes = []
    if stale:
        runs = ", ".join(f"{v} seed {s}" for v, s in stale)
        notes.append(
            f"{len(stale)} recorded run(s) were made with other settings than the grid defines now "
            f"(settings hash differs; see their records under `{grid.records}`): {runs}."
        )
        print(f"[jrag ablate] warning: {notes[-1]}", flush=True)
    base = " + ".join(map(str, grid.bases))
    baseline = args.baseline or grid.baseline
    path = write_results(
        grid.out_dir if args.baseline is None else grid.out_dir / f"vs_{baseline}",
        str(grid.path),
        base,
        list(grid.variants),
        grid.seeds,
        results,
        wall,
        questions=finished_questions(grid),
        baseline=baseline,
        notes=notes,
    )
    print(path.read_text())
    return 0
