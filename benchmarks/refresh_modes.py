"""A training step's wall time under each index refresh mode, over a corpus of 10^5 passages
(issue 13), with the staleness each leaves.

    python benchmarks/refresh_modes.py --entities 83334 --steps 8

The quickstart system (experiments/quickstart.yaml: MiniLM memory-token retriever, SmolLM2-135M
with LoRA, B = 8, C = 4, K = 2) on the built-in knowledge base scaled to ``--entities`` people
(1.2 passages per entity: 83,334 give 100,000 passages), exact index, corpus memory not cached.
The corpus is encoded once (timed: that is one blocking refresh). Then every mode runs the same
``--steps`` optimiser steps from the same weights on the same batches:

- ``none``: the index from step 0 is never refreshed (the floor every mode is compared with);
- ``blocking``: a full re-encode every ``--every`` steps (default: ``--steps``, so the last
  step of the window pays one whole refresh; mean = the amortised cost at that period);
- ``rolling``: after each step ``IndexRefresh._roll`` re-encodes N / R passages (R =
  ``--rolling-steps``) and writes them into the index;
- ``rerank``: the stale index's top C' (``--rerank-depth``) re-encoded and re-scored, best C kept.

A step's time covers the candidate search, the forward and backward pass, the optimiser step and
the mode's own work (the rolling slice, the blocking refresh). Staleness after the window: the
mean and maximum age (steps) of the index rows the last step used, and on a fixed sample of
``--probe`` training questions the overlap of the mode's top-C candidates with the top-C of a
fresh index over the whole corpus (one extra corpus pass per mode, not timed in the steps).
Writes JSON with the machine named and the ratio of each mode's mean step to ``none``'s.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import joint_rag  # noqa: F401  - sets OMP_WAIT_POLICY before torch loads

import torch  # noqa: E402  isort: skip

from joint_rag.atomic import write_json  # noqa: E402
from joint_rag.config import build  # noqa: E402
from joint_rag.data.collate import collate_examples  # noqa: E402
from joint_rag.retrieval.index import PassageIndex  # noqa: E402
from joint_rag.system import eval_mode  # noqa: E402
from joint_rag.training.callbacks import IndexRefresh  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODES = ("none", "rolling", "rerank", "blocking")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=83334)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--every", type=int, default=None, help="blocking period (default --steps)")
    parser.add_argument("--rolling-steps", type=int, default=2000)
    parser.add_argument("--rerank-depth", type=int, default=16)
    parser.add_argument("--probe", type=int, default=32)
    parser.add_argument(
        "--overlap",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the stale/fresh top-C overlap (one full corpus pass per mode)",
    )
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "refresh_modes_cpu.json"))
    args = parser.parse_args()
    every = args.every or args.steps

    t0 = time.perf_counter()
    cli = build(
        [REPO / "experiments" / "quickstart.yaml"],
        [
            f"--data.source.init_args.num_entities={args.entities}",
            "--data.source.init_args.questions_per_entity=1",
            "--model.cache_corpus_memory=false",
        ],
    )
    module, dm = cli.model, cli.datamodule
    dm.setup("fit")
    system = module.system
    system.attach_corpus(dm.corpus)
    n = len(dm.corpus)
    print(f"N = {n} passages, built in {time.perf_counter() - t0:.0f} s", flush=True)
    cache = REPO / "checkpoints" / "bench" / f"refresh_index_{n}"  # resume after a crash: the encode is long
    t0 = time.perf_counter()
    if (cache / "timing.json").is_file():
        system.index = PassageIndex.load(cache, expect={"corpus": dm.corpus.fingerprint()})
        full_refresh_s = json.loads((cache / "timing.json").read_text())["full_refresh_s"]
        print(f"loaded the step-0 index from {cache}", flush=True)
    else:
        system.build_index(step=0, show_progress=False)
        full_refresh_s = time.perf_counter() - t0
        system.index.save(cache)
        write_json(cache / "timing.json", {"full_refresh_s": full_refresh_s})
    print(
        f"full corpus encode + index: {full_refresh_s:.1f} s ({n / full_refresh_s:.0f} passages/s)",
        flush=True,
    )
    start_index = system.index
    start_state = copy.deepcopy(module.state_dict())
    rng = random.Random(0)
    train = dm.data.train
    batches = [collate_examples(rng.sample(train, dm.batch_size)) for _ in range(args.steps)]
    probe = train[:: max(1, len(train) // args.probe)][: args.probe]
    probe_q, probe_i = [e.query for e in probe], [e.instruction for e in probe]
    C = system.num_candidates

    # one untimed warm-up step (allocator, kernels), then every mode starts from the same weights
    module.train()
    warm = module._joint_inputs(batches[0], module.objective.needs)
    module.objective(warm)[0].backward()
    module.zero_grad(set_to_none=True)

    results = {}
    for mode in args.modes.split(","):
        module.load_state_dict(start_state)
        system.index = copy.deepcopy(start_index)
        module.rerank_depth = args.rerank_depth if mode == "rerank" else None
        module.train()
        configured = module.configure_optimizers()
        optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
        roller = IndexRefresh(mode="rolling", rolling_steps=args.rolling_steps, show_progress=False)
        times, rows = [], None
        for step, batch in enumerate(batches, start=1):
            t0 = time.perf_counter()
            inputs = module._joint_inputs(batch, module.objective.needs)
            loss, _ = module.objective(inputs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if mode == "rolling":
                roller._roll(SimpleNamespace(global_step=step), module)
            elif mode == "blocking" and step % every == 0:
                system.build_index(step=step, show_progress=False)
            times.append(time.perf_counter() - t0)
            print(f"{mode} step {step}: {times[-1]:.2f} s, loss {float(loss):.3f}", flush=True)
        _, rows = module.candidate_ids([*batch.queries], batch.instructions)
        ages = system.index.ages(rows, args.steps)
        overlap = None
        if args.overlap:
            used, _ = module.candidate_ids(probe_q, probe_i)
            fresh = system.build_index(step=args.steps, show_progress=False, replace=False)
            with torch.no_grad(), eval_mode(system):
                _, fresh_rows = fresh.search(system.encode_queries(probe_q, probe_i), C)
            fresh_ids = [{fresh.passage_ids[r] for r in row} for row in fresh_rows.tolist()]
            overlap = statistics.mean(len(f & set(u)) / C for f, u in zip(fresh_ids, used))
        results[mode] = {
            "step_seconds": times,
            "mean_step_s": statistics.mean(times),
            "median_step_s": statistics.median(times),
            "max_step_s": max(times),
            "row_age_mean": float(ages.mean()),
            "row_age_max": float(ages.max()),
            "stale_overlap_top_c": overlap,
        }
        print(f"{mode}: {results[mode]}", flush=True)
    base = results.get("none", {}).get("mean_step_s")
    for r in results.values():
        r["ratio_to_none"] = r["mean_step_s"] / base if base else None
    write_json(
        args.out,
        {
            "benchmark": "refresh_modes",
            "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": f"python benchmarks/refresh_modes.py --entities {args.entities} --steps {args.steps} "
            f"--rolling-steps {args.rolling_steps} --rerank-depth {args.rerank_depth}",
            "passages": n,
            "full_refresh_s": full_refresh_s,
            "blocking_every": every,
            "rolling_steps": args.rolling_steps,
            "rerank_depth": args.rerank_depth,
            "num_candidates": C,
            "batch_size": dm.batch_size,
            "modes": results,
        },
    )


if __name__ == "__main__":
    main()
