"""Answer latency on CPU: the generator reading compressed memory vs raw passage text.

    python benchmarks/answer_latency.py --model checkpoints/quickstart/export --repeats 5

For one exported model (``jrag export``), K=5 passages of about ``--passage-tokens`` generator
tokens each (synthetic: corpus passages concatenated, then cut to length) per question:

- ``text``: the passages' text in the prompt (generator mode "text");
- ``memory (trained)``: the trained compressor's memory, (B, K, M, H) with the trained M;
- ``memory (random)``: random memory of shape (B, K, M, H) for each M in ``--m-values``.
  M is fixed by the trained compressor, so these rows measure the generator's cost only
  (prompt building + prefill + decode), which is all that M changes at answer time.

Each row times prompt building (tokenise + embed + splice), prefill and exactly
``--max-new-tokens`` greedy decode steps (EOS ignored, so every row decodes the same length);
medians over ``--repeats``. Compressing passages is reported separately (``compress_s``):
at answer time the corpus memory is precomputed with the index. Retrieval is the same for
every row and not timed. Writes JSON with the machine, the date and the text/memory ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import time
from pathlib import Path

import joint_rag  # noqa: F401  - sets OMP_WAIT_POLICY before torch loads
from joint_rag import provenance
from joint_rag.atomic import write_json
from joint_rag.pipeline import JointRAG

import torch  # noqa: E402  isort: skip

from joint_rag.models.generator import _logits_kwarg  # noqa: E402

K = 5


def synthetic_passages(rag: JointRAG, n: int, tokens: int) -> list[str]:
    """``n`` passages of about ``tokens`` generator tokens: corpus passages concatenated, cut to length."""
    tok = rag.system.generator.tokenizer
    texts = rag.corpus.texts()
    out = []
    for i in range(n):
        ids: list[int] = []
        j = i
        while len(ids) < tokens:
            ids += tok(" " + texts[j % len(texts)], add_special_tokens=False).input_ids
            j += 1
        out.append(tok.decode(ids[:tokens]))
    return out


def build_inputs(rag: JointRAG, queries: list[str], **kwargs) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Prompt embeddings and mask exactly as ``Generator.generate`` builds them, and the time it took."""
    gen = rag.system.generator
    t0 = time.perf_counter()
    embeds, attn = gen.prompt_inputs(
        queries, kwargs.get("memory"), kwargs.get("passages"), kwargs.get("instructions")
    )
    return embeds, attn, time.perf_counter() - t0


@torch.no_grad()
def prefill_decode(gen, embeds: torch.Tensor, attn: torch.Tensor, new_tokens: int):
    """(prefill seconds, decode seconds) of greedy decoding of exactly ``new_tokens`` tokens (EOS
    ignored): the prefill is one forward pass with the last position's logits; the decode time is
    ``model.generate`` (as ``Generator.generate`` calls it, with min_new_tokens = max_new_tokens)
    minus that prefill."""
    model = gen.model
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    t0 = time.perf_counter()
    last_only = {name: 1} if (name := _logits_kwarg(model)) else {}
    model(inputs_embeds=embeds, attention_mask=attn, position_ids=position_ids, use_cache=True, **last_only)
    prefill = time.perf_counter() - t0
    config = gen.greedy_config(new_tokens)
    config.min_new_tokens = new_tokens
    t1 = time.perf_counter()
    model.generate(inputs_embeds=embeds, attention_mask=attn, generation_config=config)
    return prefill, max(0.0, time.perf_counter() - t1 - prefill)


def time_row(rag: JointRAG, queries: list[str], repeats: int, warmup: int, new_tokens: int, **kwargs) -> dict:
    """Median prompt/prefill/decode seconds of one configuration."""
    runs = []
    for i in range(warmup + repeats):
        embeds, attn, prompt_s = build_inputs(rag, queries, **kwargs)
        prefill_s, decode_s = prefill_decode(rag.system.generator, embeds, attn, new_tokens)
        if i >= warmup:
            runs.append((prompt_s, prefill_s, decode_s))
    med = [statistics.median(r[j] for r in runs) for j in range(3)]
    return {
        "prompt_tokens": int(attn.sum(-1).max()),
        "prompt_s": med[0],
        "prefill_s": med[1],
        "decode_s": med[2],
        "total_s": sum(med),
        "runs": [list(r) for r in runs],
    }


def machine() -> dict:
    """provenance.machine() plus the platform string and the joint_rag version."""
    return {**provenance.machine(), "platform": platform.platform(), "joint_rag": joint_rag.__version__}


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rag = JointRAG.from_pretrained(args.model, device="cpu")
    gen, B, N = rag.system.generator, args.batch_size, args.max_new_tokens
    queries = [f"What is known about {rag.corpus[i % len(rag.corpus)].title or 'this'}?" for i in range(B)]
    passages = synthetic_passages(rag, B * K, args.passage_tokens)
    per_query = [passages[b * K : (b + 1) * K] for b in range(B)]
    passage_tokens = [len(gen.tokenizer(p, add_special_tokens=False).input_ids) for p in passages]
    common = dict(repeats=args.repeats, warmup=args.warmup, new_tokens=N)
    rows = []

    mode, max_passage = gen.mode, gen.max_passage_tokens
    gen.mode, gen.max_passage_tokens = "text", max(passage_tokens)
    try:
        rows.append(
            {
                "name": "text",
                "mode": "text",
                "M": None,
                **time_row(rag, queries, passages=per_query, **common),
            }
        )
    finally:
        gen.mode, gen.max_passage_tokens = mode, max_passage

    gen.mode = "memory"
    try:
        M = rag.system.compressor.memory_slots
        compress = []
        with torch.no_grad():
            for _ in range(args.warmup + args.repeats):
                t0 = time.perf_counter()
                memory = rag.system.compressor(passages).memory.view(B, K, M, -1)  # (B, K, M, H)
                compress.append(time.perf_counter() - t0)
        row = time_row(rag, queries, memory=memory, **common)
        row["compress_s"] = statistics.median(compress[args.warmup :])
        rows.append(
            {"name": f"memory_trained_M{M}", "mode": "memory", "M": M, "memory": "trained compressor", **row}
        )
        scale = gen.model.get_input_embeddings().weight.std().item()
        for m in args.m_values:
            memory = torch.randn(B, K, m, gen.hidden_size) * scale  # (B, K, M, H)
            row = time_row(rag, queries, memory=memory, **common)
            rows.append(
                {
                    "name": f"memory_random_M{m}",
                    "mode": "memory",
                    "M": m,
                    "memory": "random (B, K, M, H)",
                    **row,
                }
            )
    finally:
        gen.mode = mode

    text = rows[0]
    ratios = {
        r["name"]: {
            "total_text_over_memory": text["total_s"] / r["total_s"],
            "prefill_text_over_memory": text["prefill_s"] / r["prefill_s"],
        }
        for r in rows[1:]
    }
    return {
        "benchmark": "answer_latency",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "model": str(args.model),
        "trained": {k: rag.manifest.get(k) for k in ("K", "M", "generator_mode")}
        | {"similarity": rag.system.similarity},
        "setup": {
            "device": "cpu",
            "batch_size": B,
            "passages_per_query": K,
            "passage_tokens_target": args.passage_tokens,
            "passage_tokens_mean": statistics.mean(passage_tokens),
            "max_new_tokens": N,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "statistic": "median",
        },
        "notes": (
            f"M is fixed by the trained compressor (M={rag.system.compressor.memory_slots}); rows "
            "'memory_random_M*' feed random memory of shape (B, 5, M, H) to the generator and measure "
            "its prefill+decode cost only. Every row decodes exactly max_new_tokens tokens (EOS "
            "ignored). compress_s (trained row) is the compressor's time for the B*5 passages, "
            "normally precomputed with the index. Retrieval time is excluded (same for all rows)."
        ),
        "rows": rows,
        "ratios": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="export folder (jrag export)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1, help="questions answered together (B)")
    parser.add_argument("--passage-tokens", type=int, default=256, help="generator tokens per passage")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--m-values", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16, 32])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/answer_latency_cpu.json"))
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.max_new_tokens < 1 or args.batch_size < 1:
        parser.error("--repeats, --max-new-tokens and --batch-size must be >= 1")
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    for r in result["rows"]:
        print(
            f"{r['name']:>22}: prompt {r['prompt_tokens']:5d} tok  total {r['total_s'] * 1e3:8.1f} ms  "
            f"(prefill {r['prefill_s'] * 1e3:7.1f}, decode {r['decode_s'] * 1e3:7.1f})"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
