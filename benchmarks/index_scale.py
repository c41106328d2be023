"""Index types at corpus scale on this machine: build time, search latency, recall@10 against
exact search, memory (issue 13).

    python benchmarks/index_scale.py --n 100000 --data random,clustered
    python benchmarks/index_scale.py --n 1000000 --data clustered --types exact,faiss,faiss_ivf,faiss_ivfpq

For each data kind and N: N passage vectors and 1024 query vectors of d = 384 (one vector per
text, as MiniLM's mean pooling gives), similarity ``cosine``:

- ``random``: i.i.d. Gaussian vectors (the hardest case for IVF/PQ: no structure);
- ``clustered``: unit vectors around 1,000 random directions (Gaussian noise of 0.03 per
  coordinate, about 0.6 in norm, before normalising) (embeddings of a real corpus are
  clustered like this; a stand-in for MiniLM vectors, which would take hours to encode here).

Per index type (``joint_rag.retrieval.index.PassageIndex`` with default parameters, chosen from
N): build seconds (including IVF/PQ training and adding), median search seconds at B = 1, 64
and 1024 (3 runs each, the first after a warm-up), recall@10 against the exact top-10 of the
1024 queries, and index memory (faiss's serialised size; the stored vectors for exact). Writes
JSON (merged into ``--out`` by N and data kind) with the machine and the speed-up of each type
over exact search at each B.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import joint_rag  # noqa: F401  - sets OMP_WAIT_POLICY before torch loads

import torch  # noqa: E402  isort: skip

from joint_rag import provenance  # noqa: E402
from joint_rag.atomic import write_json  # noqa: E402
from joint_rag.retrieval.index import PassageIndex  # noqa: E402

D, QUERIES, BATCHES = 384, 1024, (1, 64, 1024)


def vectors(kind: str, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randn(n, 1, D, generator=g)
    centres = torch.nn.functional.normalize(torch.randn(1000, D, generator=g), dim=-1)
    out = torch.empty(n, 1, D)
    for start in range(0, n, 100_000):  # in blocks: no second (n, D) temporary
        m = min(100_000, n - start)
        x = centres[torch.randint(0, 1000, (m,), generator=g)] + 0.03 * torch.randn(m, D, generator=g)
        out[start : start + m, 0] = torch.nn.functional.normalize(x, dim=-1)
    return out


def index_bytes(index: PassageIndex) -> int:
    if index._faiss is None:
        return index.vectors.numel() * index.vectors.element_size()
    import faiss

    return int(faiss.serialize_index(index._faiss).size)


def timed_search(index: PassageIndex, queries: torch.Tensor, b: int) -> float:
    index.search(queries[:b], 10)  # warm-up
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        index.search(queries[:b], 10)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def machine() -> dict:
    """provenance.machine() plus the platform string and the faiss version."""
    import faiss

    return {**provenance.machine(), "platform": platform.platform(), "faiss": faiss.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--data", default="random,clustered")
    parser.add_argument("--types", default="exact,faiss,faiss_ivf,faiss_ivfpq,faiss_hnsw")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/index_scale_cpu.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    result = __import__("json").loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    result["machine"] = machine()
    for kind in args.data.split(","):
        passages, queries = vectors(kind, args.n, 0), vectors(kind, QUERIES, 1)
        ids = [str(i) for i in range(args.n)]
        rows, truth = {}, None
        for backend in args.types.split(","):
            t0 = time.perf_counter()
            index = PassageIndex(passages, ids, "cosine", backend)
            build = time.perf_counter() - t0
            _, top = index.search(queries, 10)
            if backend == "exact":
                truth = top
            recall = None
            if truth is not None:
                recall = (
                    sum(len(set(a.tolist()) & set(t.tolist())) for a, t in zip(top, truth)) / truth.numel()
                )
            row = {
                "build_s": round(build, 3),
                "search_s": {str(b): round(timed_search(index, queries, b), 5) for b in BATCHES},
                "recall@10": recall,
                "index_mib": round(index_bytes(index) / 2**20, 1),
                "params": index.params.as_dict() if index.params is not None else {},
            }
            rows[backend] = row
            print(kind, args.n, backend, row, flush=True)
            del index
        if "exact" in rows:
            for row in rows.values():
                row["speedup_vs_exact"] = {
                    b: round(rows["exact"]["search_s"][b] / s, 2) for b, s in row["search_s"].items()
                }
        result["runs"][f"{kind}/N={args.n}"] = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "d": D,
            "rows": rows,
        }
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
