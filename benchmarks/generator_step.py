"""One training step of the generator: vocabulary logits at every position vs at answer positions only.

    python benchmarks/generator_step.py --repeats 5 --threads 2

``Generator.forward`` asks the model for logits only at the positions that predict an answer
token (``logits_to_keep``); before, it computed (B, S, V) logits and gathered T of the S
positions. This times one forward + backward of the answer NLL with both, interleaved in one
process (so machine load hits them alike), on an XQuAD-grid-shaped batch: SmolLM2-135M with LoRA
(r = 8), B = 8 questions, K = 2 selected passages of M = 48 extractive memory slots each
(random memory that requires grad, as the compressor's would), answers of a few words.
Peak memory is each variant's resident-set high-water mark above the loaded model, in its own
fresh process (Linux only: the mark is reset through /proc/self/clear_refs after loading).
Writes JSON (machine, date, command) to benchmarks/results/generator_step_cpu.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import joint_rag  # noqa: F401  - sets OMP_WAIT_POLICY before torch loads
from joint_rag.atomic import write_json
from joint_rag.models import generator as generator_mod

import torch  # noqa: E402  isort: skip

QUESTIONS = [
    "In what year did the Normans first reach the coast of southern Italy?",
    "Who was the duke that led the conquest of England?",
    "What language did the rulers of Normandy speak at court?",
    "Which river flows through the old capital of the duchy?",
    "How many knights are said to have sailed with the first expedition?",
    "What was the name of the abbey founded after the battle?",
    "Which king granted the land to the Viking leader Rollo?",
    "Where was the treaty between the duke and the king signed?",
]
ANSWERS = [
    "in 999",
    "William the Conqueror",
    "Old French",
    "the Seine",
    "about forty",
    "Battle Abbey",
    "Charles the Simple",
    "at Saint-Clair-sur-Epte",
]
VARIANTS = ("all_positions", "answer_positions")


def set_variant(variant: str) -> None:
    """all_positions: the generator behaves as if the model had no ``logits_to_keep``."""
    if variant == "all_positions":
        generator_mod._logits_kwarg = lambda model: None
    else:
        generator_mod._logits_kwarg = ORIGINAL_KWARG


ORIGINAL_KWARG = generator_mod._logits_kwarg


def build(args) -> tuple[generator_mod.Generator, torch.Tensor]:
    torch.manual_seed(0)
    gen = generator_mod.Generator(args.backbone, train_mode="lora", lora_rank=8, use_chat_template=False)
    gen.train()
    memory = torch.randn(len(QUESTIONS), args.k, args.m, gen.hidden_size) * 0.02  # (B, K, M, H)
    return gen, memory


def step(gen: generator_mod.Generator, memory: torch.Tensor) -> float:
    mem = memory.clone().requires_grad_(True)
    t0 = time.perf_counter()
    out = gen(QUESTIONS, ANSWERS, memory=mem)
    out.nll.mean().backward()
    elapsed = time.perf_counter() - t0
    gen.zero_grad(set_to_none=True)
    return elapsed


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_rss_child(args) -> None:
    """Child process: one variant; after the model is loaded, reset the resident-set high-water
    mark (Linux: /proc/self/clear_refs), run two steps, print the peak RSS above the loaded model
    in MiB (the load's own peak varies by a few hundred MiB and would hide the difference)."""
    set_variant(args.child)
    gen, memory = build(args)
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_mib("VmRSS")
    for _ in range(2):
        step(gen, memory)
    print(
        json.dumps(
            {"peak_extra_mib": round(_status_mib("VmHWM") - base, 1), "loaded_rss_mib": round(base, 1)}
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--k", type=int, default=2, help="selected passages per question")
    ap.add_argument("--m", type=int, default=48, help="memory slots per passage")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/generator_step_cpu.json")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        peak_rss_child(args)
        return

    gen, memory = build(args)
    with torch.no_grad():
        seq = [
            len(gen.prompt_ids(q, args.k, args.m, None, None)[0]) + len(gen.answer_ids(a))
            for q, a in zip(QUESTIONS, ANSWERS)
        ]
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for v in VARIANTS:  # warm-up
        set_variant(v)
        step(gen, memory)
    for _ in range(args.repeats):
        for v in VARIANTS:
            set_variant(v)
            times[v].append(step(gen, memory))

    peaks = {}
    for v in VARIANTS:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            v,
            "--backbone",
            args.backbone,
            "--k",
            str(args.k),
            "--m",
            str(args.m),
            "--threads",
            str(args.threads),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        peaks[v] = json.loads(res.stdout.strip().splitlines()[-1])

    med = {v: statistics.median(t) for v, t in times.items()}
    result = {
        "benchmark": "generator_step",
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}), {os.cpu_count()} cpus",
        "device": "cpu",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "torch": torch.__version__,
        "threads": args.threads,
        "backbone": args.backbone,
        "batch": len(QUESTIONS),
        "k": args.k,
        "m": args.m,
        "sequence_lengths": seq,
        "vocab": int(gen.model.get_output_embeddings().weight.shape[0]),
        "repeats": args.repeats,
        "step_s": {v: [round(t, 4) for t in times[v]] for v in VARIANTS},
        "median_step_s": {v: round(m, 4) for v, m in med.items()},
        "speedup_answer_vs_all": round(med["all_positions"] / med["answer_positions"], 3),
        "peak_rss_above_loaded_model": peaks,
        "peak_rss_saved_mib": round(
            peaks["all_positions"]["peak_extra_mib"] - peaks["answer_positions"]["peak_extra_mib"], 1
        ),
    }
    write_json(Path(args.out), result)
    print(
        json.dumps(
            {k: result[k] for k in ("median_step_s", "speedup_answer_vs_all", "peak_rss_above_loaded_model")},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
