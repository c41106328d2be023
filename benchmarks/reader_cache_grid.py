"""How many generator passes ``model.reader_cache`` saved in the usefulness grid.

    python benchmarks/reader_cache_grid.py [--grid checkpoints/ablations/usefulness]

Reads every finished run of the grid (``runs/ROW/seedS/metrics.json`` and the run's
``metrics.csv``) and reports, per run that logged the cache, the rows read from the cache (hits)
and computed (misses) over its training steps, the hit fraction, and the run's wall time. Counts
are exact (they are the module's counters); wall times are not comparable between runs on a
shared CPU, which is why the saving is stated as generator passes avoided. Writes
``benchmarks/results/reader_cache_usefulness_grid_cpu.json``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
from pathlib import Path

from joint_rag.atomic import write_json
from joint_rag.provenance import machine

OUT = Path(__file__).parent / "results" / "reader_cache_usefulness_grid_cpu.json"


def last_counts(metrics_csv: Path) -> tuple[float, float] | None:
    rows = [r for r in csv.DictReader(metrics_csv.open()) if r.get("train/reader_cache_misses")]
    if not rows:
        return None
    return float(rows[-1]["train/reader_cache_hits"]), float(rows[-1]["train/reader_cache_misses"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("checkpoints/ablations/usefulness"))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    runs = []
    for done in sorted(args.grid.glob("runs/*/seed*/metrics.json")):
        folder = done.parent
        logs = sorted(folder.glob("lightning_logs/version_*/metrics.csv"))
        counts = last_counts(logs[-1]) if logs else None
        metrics = json.loads(done.read_text())
        row = {
            "row": folder.parent.name,
            "seed": int(folder.name.removeprefix("seed")),
            "wall_seconds": metrics.get("wall_seconds"),
        }
        if counts is None:
            row["cache"] = None  # run before the cache existed, or a row that never reads the generator
        else:
            hits, misses = counts
            row["cache"] = {"hits": hits, "misses": misses, "hit_fraction": hits / max(1.0, hits + misses)}
        runs.append(row)
    cached = [r for r in runs if r["cache"] and r["cache"]["hits"] + r["cache"]["misses"] > 0]
    total = sum(r["cache"]["hits"] + r["cache"]["misses"] for r in cached)
    write_json(
        args.out,
        {
            "benchmark": "reader_cache_grid",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine("cpu"),
            "grid": str(args.grid),
            "runs": runs,
            "generator_rows_read": total,
            "generator_rows_computed": sum(r["cache"]["misses"] for r in cached),
            "fraction_avoided": (sum(r["cache"]["hits"] for r in cached) / total) if total else None,
        },
    )
    for r in cached:
        c = r["cache"]
        print(
            f"{r['row']} seed {r['seed']}: {c['hits']:.0f} hits, {c['misses']:.0f} misses ({c['hit_fraction']:.0%})"
        )
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
