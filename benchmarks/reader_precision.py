"""The frozen reader in float32 and under bf16 autocast: time per reading pass and agreement.

    python benchmarks/reader_precision.py --questions 8 --candidates 8 --repeats 3

The usefulness grid (``experiments/ablations/usefulness.yaml``) reads every training candidate
with a frozen SmolLM2-135M-Instruct (text mode, 128 passage tokens, the grids' plain prompt) and
since session 13 runs with ``trainer.precision: bf16-mixed``. This measures what that buys and
what it changes, on the grid's own data (the usefulness benchmark's knowledge base, validation
questions): per question, its gold passage and the C - 1 passages that share the most words
with the question (its decoys and answer-bearing distractors come first), read one passage per
prompt, all Q x C prompts in one batch, as LSR/PDist/EMDR2 read them.

- Time: one no-grad pass in float32 and one under ``torch.autocast("cpu", torch.bfloat16)``,
  interleaved ``--repeats`` times in one process (machine load hits both alike); medians and
  their ratio. On a CPU without AMX / AVX512-BF16, bfloat16 is emulated and slower.
- Agreement of the usefulness teacher: the answer log-likelihood (sum over answer tokens) per
  prompt, |bf16 - fp32| mean and max in nats; per question, whether the most useful candidate is
  the same, and the KL divergence KL(p32 || p16) of the LSR/PDist target p = softmax(loglik)
  over the C candidates.

Writes JSON (machine, date, command) to ``benchmarks/results/reader_precision_cpu.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import sys
import time

import joint_rag  # noqa: F401  - sets OMP_WAIT_POLICY before torch loads
from joint_rag import provenance
from joint_rag.atomic import write_json

import torch  # noqa: E402  isort: skip

from joint_rag.data.synthetic import SyntheticSource  # noqa: E402
from joint_rag.models import Generator  # noqa: E402
from joint_rag.system import eval_mode  # noqa: E402

#: experiments/ablations/base/usefulness.yaml's data source
SOURCE = dict(
    num_entities=250,
    seed=0,
    questions_per_entity=3,
    distractor_fraction=0.0,
    two_hop_fraction=0.2,
    decoys_per_question=2,
    answer_distractors_per_question=2,
    val_fraction=0.4,
)


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def prompts(questions: int, candidates: int) -> tuple[list[str], list[str], list[list[str]]]:
    """Q x C (query, answer, [passage]) rows: each question's gold passage first, then the
    passages sharing the most words with it."""
    data = SyntheticSource(**SOURCE).load()
    texts = {p.passage_id: p.full_text() for p in data.corpus}
    bags = {pid: words(t) for pid, t in texts.items()}
    queries, answers, passages = [], [], []
    for ex in data.val[:questions]:
        q = words(ex.query)
        gold = ex.gold_passage_ids[0]
        others = sorted((pid for pid in texts if pid != gold), key=lambda pid: (-len(q & bags[pid]), pid))
        for pid in [gold, *others[: candidates - 1]]:
            queries.append(ex.query)
            answers.append(ex.answer)
            passages.append([texts[pid]])
    return queries, answers, passages


def loglik(gen: Generator, queries, answers, passages, bf16: bool) -> tuple[torch.Tensor, float]:
    """(answer log-likelihood per row, seconds) of one no-grad pass."""
    with torch.no_grad(), eval_mode(gen), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        t0 = time.perf_counter()
        out = gen(queries, answers, passages=passages)
        seconds = time.perf_counter() - t0
    return (out.token_logprobs.float() * out.token_mask).sum(1), seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/reader_precision_cpu.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    queries, answers, passages = prompts(args.questions, args.candidates)
    gen = Generator(
        args.backbone, mode="text", train_mode="frozen", max_passage_tokens=128, use_chat_template=False
    )
    loglik(gen, queries, answers, passages, False)  # warm-up of both paths
    loglik(gen, queries, answers, passages, True)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(args.repeats):
        ll32, t = loglik(gen, queries, answers, passages, False)
        times["fp32"].append(t)
        ll16, t = loglik(gen, queries, answers, passages, True)
        times["bf16"].append(t)
    Q, C = args.questions, args.candidates
    a, b = ll32.view(Q, C).double(), ll16.view(Q, C).double()
    p32, p16 = a.log_softmax(1), b.log_softmax(1)
    kl = (p32.exp() * (p32 - p16)).sum(1)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "reader_precision",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "machine": provenance.machine("cpu"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "setup": {
            "backbone": args.backbone,
            "questions": Q,
            "candidates": C,
            "rows_per_pass": Q * C,
            "repeats": args.repeats,
            "source": SOURCE,
        },
        "seconds": times,
        "median_seconds": med,
        "bf16_speedup": med["fp32"] / med["bf16"],
        "agreement": {
            "abs_loglik_diff_mean_nats": float((a - b).abs().mean()),
            "abs_loglik_diff_max_nats": float((a - b).abs().max()),
            "top1_same": float((a.argmax(1) == b.argmax(1)).double().mean()),
            "kl_softmax_mean": float(kl.mean()),
            "kl_softmax_max": float(kl.max()),
            "loglik_fp32_mean_nats": float(a.mean()),
        },
    }
    write_json(args.out, result)
    print(
        f"fp32 {med['fp32']:.2f} s, bf16 {med['bf16']:.2f} s per pass of {Q * C} prompts: "
        f"{result['bf16_speedup']:.2f}x; |d loglik| mean {result['agreement']['abs_loglik_diff_mean_nats']:.3f} "
        f"max {result['agreement']['abs_loglik_diff_max_nats']:.3f} nats; top-1 same "
        f"{result['agreement']['top1_same']:.3f}; KL mean {result['agreement']['kl_softmax_mean']:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
