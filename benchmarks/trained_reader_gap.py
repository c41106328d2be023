"""The usefulness gap with a trained reader: does LoRA training on the useful passage teach
SmolLM2 to prefer it over the answer-bearing distractors?

    python benchmarks/trained_reader_gap.py --ckpt checkpoints/usefulness_reading/.../last.ckpt

The checkpoint is the reading-ceiling run (``experiments/ablations/base/usefulness_reading.yaml``:
LoRA on the gold passages, the retriever frozen). This builds the off-the-shelf system of
``jrag gap`` over the usefulness benchmark (``experiments/gap/off_the_shelf.yaml``), with a LoRA
generator of the same rank, loads the checkpoint's generator weights into it (every key, or it
stops), and runs ``joint_rag.gap.usefulness_gap`` on the same seeded question sample as the
frozen-reader run in ``benchmarks/results/usefulness_gap_cpu.json``. Writes
``benchmarks/results/usefulness_gap_trained_reader_cpu.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import joint_rag  # noqa: F401  - sets OMP_WAIT_POLICY before torch loads
from joint_rag.atomic import write_json

import torch  # noqa: E402  isort: skip

OUT = Path(__file__).parent / "results" / "usefulness_gap_trained_reader_cpu.json"
CONFIGS = [
    "experiments/quickstart.yaml",
    "experiments/ablations/base/usefulness.yaml",
    "experiments/gap/off_the_shelf.yaml",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="last.ckpt of the reading-ceiling run")
    parser.add_argument("--questions", type=int, default=150)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="question sample seed (as jrag gap --seed)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from joint_rag.commands.gap import table
    from joint_rag.config import build, override
    from joint_rag.gap import sample_questions, usefulness_gap
    from joint_rag.provenance import machine

    started = time.perf_counter()
    cli = build(
        CONFIGS,
        [
            override("model.generator.init_args.train_mode", "lora"),
            override("model.generator.init_args.lora_rank", args.lora_rank),
        ],
    )
    system = cli.model.system
    state = torch.load(args.ckpt, map_location="cpu", weights_only=True)["state_dict"]
    prefix = "system.generator."
    weights = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = system.generator.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise SystemExit(
            f"{args.ckpt}: generator keys do not match: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    data = cli.datamodule.source.load()
    examples = sample_questions(data.val, args.questions, args.seed)  # as jrag gap samples
    system.attach_corpus(data.corpus)
    result = usefulness_gap(system, examples, num_candidates=args.candidates, seed=args.seed)
    result = {
        "benchmark": "usefulness_gap_trained_reader",
        "command": f"python benchmarks/trained_reader_gap.py --ckpt {args.ckpt} --questions {args.questions} "
        f"--candidates {args.candidates}",
        "configs": CONFIGS,
        "reader": f"SmolLM2-135M-Instruct + LoRA rank {args.lora_rank} from {args.ckpt} (reading-ceiling run)",
        "corpus_size": len(data.corpus),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": machine("cpu"),
        **result,
    }
    write_json(args.out, result)
    print(table(result))


if __name__ == "__main__":
    main()
