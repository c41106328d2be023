"""One query-side training step of the instruction study, per retrieval backbone.

    python benchmarks/query_step_cost.py [--repeats 3] [--backbones minilm smollm2-135m]

The instruction-data grid (``experiments/ablations/instruction_scaling.yaml``) trains only the
query encoder: per step, a batch of 32 instruction-prefixed queries is encoded with gradients and
backpropagated through a loss on their retrieval vectors (the passage vectors come from the
index). This times exactly that, forward + backward of ``Compressor`` on 32 of the knowledge
base's instruction queries, for each backbone in one process, interleaved (so machine load hits
them alike), and reports each backbone's median and its ratio to the first. It says what one
SmolLM2-backbone row of the grid (120 steps) costs against a MiniLM row. Writes JSON (machine,
date, command) to ``benchmarks/results/query_step_cost_cpu.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import joint_rag  # noqa: F401  - sets OMP_WAIT_POLICY before torch loads
from joint_rag.atomic import write_json
from joint_rag.provenance import machine

import torch  # noqa: E402  isort: skip

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "query_step_cost_cpu.json"
RETRIEVAL = {"minilm": "mean_pool", "smollm2-135m": "last_token", "tiny-bert": "mean_pool"}


def queries(n: int = 32) -> list[str]:
    """The grid's training text: the instruction prepended to the question, as the retriever sees it."""
    from joint_rag.data.synthetic import SyntheticSource
    from joint_rag.system import with_instructions

    data = SyntheticSource(
        num_entities=2500,
        questions_per_entity=1,
        instruction_examples=256,
        instruction_eval_towns=0.3,
        seed=0,
    ).load()
    examples = [ex for ex in data.train if ex.instruction][:n]
    if len(examples) < n:
        raise SystemExit(f"only {len(examples)} instruction examples in the training split")
    return with_instructions([ex.query for ex in examples], [ex.instruction for ex in examples])


def step(encoder, texts: list[str]) -> float:
    start = time.perf_counter()
    vectors = encoder(texts, need_memory=False).retrieval  # (B, 1, D)
    loss = torch.nn.functional.normalize(vectors.float().flatten(1), dim=-1).sum()
    loss.backward()
    encoder.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["minilm", "smollm2-135m"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from joint_rag.models import Compressor

    texts = queries(args.batch)
    tokens = {}
    encoders = {}
    for name in args.backbones:
        enc = Compressor(
            name, num_memory_tokens=1, max_length=128, retrieval=RETRIEVAL.get(name, "mean_pool")
        )
        enc.train()
        encoders[name] = enc
        tokens[name] = int(enc.tokenize(texts)["attention_mask"].sum())
        step(enc, texts)  # warm-up
    times = {name: [] for name in encoders}
    for _ in range(args.repeats):
        for name, enc in encoders.items():
            times[name].append(step(enc, texts))
    first = args.backbones[0]
    rows = {
        name: {
            "median_seconds": statistics.median(ts),
            "seconds": ts,
            "tokens_in_batch": tokens[name],
            "ratio_to_" + first: statistics.median(ts) / statistics.median(times[first]),
        }
        for name, ts in times.items()
    }
    for name, row in rows.items():
        print(f"{name}: {row['median_seconds']:.2f} s a step ({row['tokens_in_batch']} tokens), "
              f"{row['ratio_to_' + first]:.1f}x {first}")  # fmt: skip
    write_json(
        args.out,
        {
            "benchmark": "query_step_cost",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine("cpu"),
            "command": " ".join(["python", *sys.argv]),
            "batch": args.batch,
            "repeats": args.repeats,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
