"""Training against the embedding cap: single-vector against multi-vector memory, trained on
generated LIMIT-style data and evaluated on LIMIT-small (issue: what an embedding can represent).

    python benchmarks/limit_training.py [--rows single m4_maxsim ...] [--seeds 0 1 2] [--set KEY=VALUE ...]

Per row and seed: ``jrag fit -c experiments/quickstart.yaml -c experiments/ablations/base/limit_train.yaml``
with the row's flags, ``jrag export`` of its last checkpoint, ``jrag evaluate`` of the export on
``../shared/data/limit-small`` (recall@2/10/20). Resumable: a (row, seed) whose ``limit.json``
exists is read, not rerun. Writes ``benchmarks/results/limit_training_cpu.json`` with every
run, per-row means, the index size per passage and the search time of the evaluation; each run
folder also keeps its per-query LIMIT-small values (``limit_per_query.jsonl``), so ``--paired
BASE`` adds every row's paired difference from BASE (the seeds both ran, the same 1,000 queries:
a two-level seeds x queries bootstrap 95% interval, ``joint_rag.report.paired_bootstrap``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from joint_rag.atomic import atomic_dir, atomic_write, write_json, write_jsonl
from joint_rag.provenance import machine

REPO = Path(__file__).resolve().parents[1]
LIMIT = REPO.parent / "shared" / "data" / "limit-small"
OUT = REPO / "benchmarks" / "results" / "limit_training_cpu.json"
MEMORY = ["--model.compressor.init_args.retrieval=memory"]
# memory read by M learned queries pooling the text's token states (starts as the mean-pooled
# vector, see Compressor(memory_readout="pool")) instead of M memory tokens
POOL = [*MEMORY, "--model.compressor.init_args.memory_readout=pool"]
# multi-vector in MiniLM's own 384-d space: the M pooled slots retrieve unprojected
# (Compressor(retrieval="pool")), their queries started at scale 0.3 so the slots start apart
# (attention on a few tokens each) instead of as M copies of the mean-pooled vector; unit slots
SLOTS = [
    "--model.compressor.init_args.memory_readout=pool",
    "--model.compressor.init_args.retrieval=pool",
    "--model.compressor.init_args.pool_init_std=0.3",
    "--model.compressor.init_args.normalize_retrieval=true",  # MaxSim sums cosines (ColBERT), not raw 384-d dots
]


def memory_rows(one: str, prefix: str, flags: list[str]) -> dict[str, list[str]]:
    """One vector of 32 dimensions (cosine), then M = 4 and 16 under MaxSim and flattened cosine."""
    rows = {one: [*flags, "--model.similarity=cosine"]}
    for m in (4, 16):
        for name, sim in (("maxsim", "maxsim"), ("flat", "flat_cosine")):
            rows[f"{prefix}{m}_{name}"] = [
                *flags,
                f"--model.compressor.init_args.num_memory_tokens={m}",
                f"--model.similarity={sim}",
            ]
    return rows


ROWS = {
    "single": [],  # mean-pooled MiniLM, cosine, 384 dimensions
    **memory_rows("memory1", "m", MEMORY),  # memory tokens (memory1: one memory token)
    **memory_rows("pool1", "pool", POOL),
    **{
        f"slots{m}_{name}": [
            *SLOTS,
            f"--model.compressor.init_args.num_memory_tokens={m}",
            f"--model.similarity={sim}",
        ]
        for m in (4, 16)
        for name, sim in (("maxsim", "maxsim"), ("flat", "flat_cosine"))
    },
}
METRICS = ("recall@2", "recall@10", "recall@20")
PER_QUERY = "limit_per_query.jsonl"
TRAIN_YAML = REPO / "experiments" / "ablations" / "base" / "limit_train.yaml"


def generated_beir(folder: Path, split: str = "val") -> Path:
    """The generated data's ``val`` queries (held out from training; the 46 training people are
    the corpus) or its ``train`` queries as a BEIR folder, for the in-distribution checks."""
    import yaml

    from joint_rag.data.limit_style import LimitStyleSource

    if folder.is_dir():  # written whole or not at all (atomic_dir)
        return folder
    args = yaml.safe_load(TRAIN_YAML.read_text())["data"]["source"]["init_args"]
    data = LimitStyleSource(**args).load()
    examples = data.val if split == "val" else data.train
    with atomic_dir(folder) as tmp:
        write_jsonl(
            tmp / "corpus.jsonl",
            ({"_id": p.passage_id, "title": p.title, "text": p.text} for p in data.corpus),
        )
        write_jsonl(
            tmp / "queries.jsonl", ({"_id": f"{split}{i}", "text": ex.query} for i, ex in enumerate(examples))
        )
        (tmp / "qrels").mkdir()
        rows = [f"{split}{i}\t{pid}\t1\n" for i, ex in enumerate(examples) for pid in ex.gold_passage_ids]
        (tmp / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(rows))
    return folder


def jrag(*args: str) -> None:
    cmd = [sys.executable, "-m", "joint_rag.cli", *args]
    # PYTHONSAFEPATH: keep the repository root (its kernels/ folder) off the subprocess's sys.path
    subprocess.run(
        cmd, check=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONSAFEPATH": "1"}
    )


def run(row: str, seed: int, root: Path, extra: list[str], report_only: bool = False) -> dict | None:
    folder = root / row / f"seed{seed}"
    result = folder / "limit.json"
    if not result.is_file() and report_only:
        return None
    if not result.is_file():
        t0 = time.perf_counter()
        configs = ["-c", "experiments/quickstart.yaml", "-c", "experiments/ablations/base/limit_train.yaml"]
        jrag(
            "fit",
            *configs,
            f"--seed_everything={seed}",
            f"--trainer.default_root_dir={folder}",
            *ROWS[row],
            *extra,
        )
        ckpt = sorted(folder.glob("lightning_logs/version_*/checkpoints/last.ckpt"))[-1]
        jrag("export", "--ckpt", str(ckpt), "--out", str(folder / "export"), "--overwrite")
        fit_s = time.perf_counter() - t0
        jrag("evaluate", "--model", str(folder / "export"), "--beir", str(LIMIT), "--recall-at", "2", "10", "20",
             "--out", str(result), "--per-query", str(folder / PER_QUERY))  # fmt: skip
        data = json.loads(result.read_text())
        data["fit_and_export_seconds"] = round(fit_s, 1)
        write_json(result, data)
    data = json.loads(result.read_text())
    if not (folder / PER_QUERY).is_file():  # runs evaluated before per-query values were kept
        jrag("evaluate", "--model", str(folder / "export"), "--beir", str(LIMIT), "--recall-at", "2", "10", "20",
             "--per-query", str(folder / PER_QUERY))  # fmt: skip
    generated = {}
    for split in ("val", "train"):  # in distribution: held-out and training queries of the generated data
        path = folder / f"generated_{split}.json"
        if not path.is_file():
            beir = generated_beir(root / f"generated_{split}_beir", split)
            jrag("evaluate", "--model", str(folder / "export"), "--beir", str(beir), "--recall-at", "2", "10", "20",
                 "--out", str(path))  # fmt: skip
        generated[split] = json.loads(path.read_text())
    index = sorted((folder / "export").rglob("*index*.safetensors")) + sorted(
        (folder / "export").rglob("vectors*")
    )
    return {
        "row": row,
        "seed": seed,
        **{m: data[m] for m in METRICS},
        "ci95": {m: data["ci95"][m] for m in METRICS},
        "generated_val": {m: generated["val"][m] for m in METRICS},
        "generated_train": {m: generated["train"][m] for m in METRICS},
        "search_seconds": data["search_seconds"],
        "fit_and_export_seconds": data.get("fit_and_export_seconds"),
        "index_bytes": sum(p.stat().st_size for p in index) if index else None,
    }


COST_ROWS = {  # row -> (similarity, vectors per passage and query, dimension)
    "single": ("cosine", 1, 384),
    "memory1": ("cosine", 1, 32),
    "m4_maxsim": ("maxsim", 4, 32),
    "m4_flat": ("flat_cosine", 4, 32),
    "m16_maxsim": ("maxsim", 16, 32),
    "m16_flat": ("flat_cosine", 16, 32),
    # the slots rows: M unit vectors in MiniLM's own 384-d space
    "slots4_maxsim": ("maxsim", 4, 384),
    "slots4_flat": ("flat_cosine", 4, 384),
    "slots16_maxsim": ("maxsim", 16, 384),
    "slots16_flat": ("flat_cosine", 16, 384),
}


def search_cost(N: int = 100_000, B: int = 64, k: int = 10, repeats: int = 5, budget_s: float = 60.0) -> dict:
    """What each row's index costs at scale: bytes per passage (fp32) and the median time of one
    ``joint_rag.kernels.similarity_topk`` search of B queries over N random passages on this
    machine's CPU (the torch path), same inputs for every row. After a warm-up search, up to
    ``repeats`` timed searches, fewer once a row's timed searches pass ``budget_s`` (at least
    one; the count is in the JSON)."""
    import torch

    from joint_rag.kernels import similarity_topk

    g = torch.Generator().manual_seed(0)
    out = {}
    for row, (sim, m, d) in COST_ROWS.items():
        shape = (N, m, d) if m > 1 else (N, d)
        P = torch.randn(*shape, generator=g)
        Q = torch.randn(B, *shape[1:], generator=g)
        similarity_topk(Q, P, k, sim)  # warm-up
        times: list[float] = []
        while len(times) < repeats and sum(times) < budget_s:
            t0 = time.perf_counter()
            similarity_topk(Q, P, k, sim)
            times.append(time.perf_counter() - t0)
        out[row] = {"similarity": sim, "vectors": m, "dim": d, "bytes_per_passage": m * d * 4,
                    "search_ms": round(statistics.median(times) * 1e3, 2), "timed": len(times)}  # fmt: skip
        del P, Q
        print(row, out[row], flush=True)
    return {"N": N, "B": B, "k": k, "repeats": repeats, "torch_threads": torch.get_num_threads(), "rows": out}


def collapse(root: Path, seed: int = 0) -> dict:
    """Per row: mean and min pairwise cosine of the export's 46 document vectors (flattened) and of
    three generated queries' vectors: near 1 means every document maps to about one direction."""
    import torch

    from joint_rag.data.formats import BeirSource
    from joint_rag.pipeline import JointRAG

    corpus = BeirSource(generated_beir(root / "generated_val_beir")).read_corpus()
    queries = ["Who likes Willow Lighthouses?", "Who likes Coral Domes?", "Who likes Brass Harbours?"]
    out = {}
    for row in ROWS:
        export = root / row / f"seed{seed}" / "export"
        if not export.is_dir():
            continue
        rag = JointRAG.from_pretrained(export)
        rag.system.attach_corpus(corpus)
        with torch.no_grad():
            _, docs = rag.system.encode_corpus()  # (46, R, D)
            q = rag.system.encode_queries(queries, [None] * len(queries))
        stats = {}
        for name, x in (("documents", docs), ("queries", q)):
            v = torch.nn.functional.normalize(x.flatten(1).float(), dim=-1)
            off = (v @ v.T)[~torch.eye(len(v), dtype=torch.bool)]
            stats[name] = {
                "mean_cosine": round(off.mean().item(), 4),
                "min_cosine": round(off.min().item(), 4),
            }
        comp = rag.system.compressor
        if comp.memory_readout == "pool":
            stats["pool"] = pool_diagnostics(comp, corpus.texts())
        out[row] = stats
        print(row, stats, flush=True)
    return out


def pool_diagnostics(comp, texts: list[str]) -> dict:
    """Do a pooled read-out's slots part? The passage side's pooling queries' norms, the
    entropy of their attention over each document's tokens against the uniform value (log of
    the document's length), and the mean cosine between a document's slots (1: M copies of
    one vector, MaxSim over them is one vector)."""
    import torch

    with torch.no_grad():
        enc = comp.tokenize(texts, comp.memory_tokens.device)
        mask = enc["attention_mask"]
        states = comp._plain_states(enc["input_ids"], mask)  # (n, L, H)
        logits = torch.einsum("nlh,mh->nml", states, comp.memory_tokens.to(states.dtype)).float()
        weights = logits.masked_fill(~mask.bool().unsqueeze(1), float("-inf")).softmax(-1)  # (n, M, L)
        entropy = -(weights * weights.clamp_min(1e-12).log()).sum(-1)  # (n, M)
        uniform = torch.log(mask.sum(-1).float())  # (n,)
        slots = torch.nn.functional.normalize(comp._pool_states(states, mask).float(), dim=-1)  # (n, M, H)
        M = slots.shape[1]
        within = (slots @ slots.transpose(1, 2))[:, ~torch.eye(M, dtype=torch.bool)].mean() if M > 1 else None
    return {
        "query_norms": [round(v, 4) for v in comp.memory_tokens.norm(dim=-1).tolist()],
        "attention_entropy": round(entropy.mean().item(), 3),
        "uniform_entropy": round(uniform.mean().item(), 3),
        "entropy_fraction_of_uniform": round((entropy / uniform.unsqueeze(1)).mean().item(), 3),
        "slot_cosine_within_document": None if within is None else round(within.item(), 4),
        "documents": len(texts),
    }


def per_query(root: Path, row: str, seed: int) -> dict[str, dict[str, float]]:
    """query id -> LIMIT-small metrics of one run (its ``limit_per_query.jsonl``; a damaged file
    raises ``DataError`` naming the file and line)."""
    from joint_rag.data.reading import iter_jsonl

    return {r["query_id"]: r for _, r in iter_jsonl(root / row / f"seed{seed}" / PER_QUERY)}


def paired(root: Path, runs: list[dict], base: str) -> dict:
    """row -> metric -> paired difference from ``base`` over the seeds both ran and the shared
    queries: mean, 95% interval (two-level bootstrap), beyond noise (interval excludes 0)."""
    from joint_rag.report import paired_bootstrap, paired_differences

    by_row: dict[str, dict[int, dict]] = {}
    for r in runs:
        by_row.setdefault(r["row"], {})[r["seed"]] = per_query(root, r["row"], r["seed"])
    if base not in by_row:
        raise SystemExit(f"--paired {base}: no finished run of that row under {root}")
    out: dict[str, dict] = {}
    for row, seeds in by_row.items():
        if row == base:
            continue
        out[row] = {}
        for m in METRICS:
            diff, used, ids = paired_differences(seeds, by_row[base], m)
            if not diff.size:
                continue
            delta, low, high = paired_bootstrap(diff)
            out[row][m] = {
                "delta": round(delta, 4),
                "ci95": [round(low, 4), round(high, 4)],
                "beyond_noise": low > 0 or high < 0,
                "seeds": used,
                "queries": len(ids),
            }
    return out


def paired_table(diffs: dict, base: str) -> str:
    """Markdown: each row's paired difference from ``base`` in recall@2/10/20."""
    lines = [f"| row − {base} | seeds | " + " | ".join(METRICS) + " |", "|---|---:|" + "---|" * len(METRICS)]
    for row, ms in diffs.items():
        if not ms:
            continue
        seeds = len(next(iter(ms.values()))["seeds"])
        cells = [
            f"{d['delta']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]{'*' if d['beyond_noise'] else ''}"
            for d in (ms[m] for m in METRICS)
        ]
        lines.append(f"| {row} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(runs: list[dict]) -> str:
    """Markdown: per row, LIMIT-small recall@2/10/20 (mean over seeds, each seed's recall@2),
    recall@2 on the generated held-out and training queries, and the fit + export time."""
    lines = [
        "| row | seeds | LIMIT-small recall@2 / @10 / @20 | recall@2 per seed | generated val / train recall@2 | fit + export s |",
        "|---|---:|---|---|---|---:|",
    ]
    for row in dict.fromkeys(r["row"] for r in runs):
        rs = [r for r in runs if r["row"] == row]
        means = " / ".join(f"{statistics.fmean(r[m] for r in rs):.3f}" for m in METRICS)
        seeds = ", ".join(f"{r['recall@2']:.3f}" for r in rs)
        gen = [r for r in rs if "generated_val" in r and "generated_train" in r]
        val = statistics.fmean(r["generated_val"]["recall@2"] for r in gen) if gen else None
        train = statistics.fmean(r["generated_train"]["recall@2"] for r in gen) if gen else None
        gen_cell = f"{val:.3f} / {train:.3f}" if gen else "-"
        fit = [r["fit_and_export_seconds"] for r in rs if r.get("fit_and_export_seconds")]
        fit_cell = f"{statistics.fmean(fit):.0f}" if fit else "-"
        lines.append(f"| {row} | {len(rs)} | {means} | {seeds} | {gen_cell} | {fit_cell} |")
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    """recall@2/10/20 per row on LIMIT-small: every seed as a dot, the mean as a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(dict.fromkeys(r["row"] for r in runs))
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(rows)), 3.6))
    width = 0.26
    for j, m in enumerate(METRICS):
        for i, row in enumerate(rows):
            vals = [r[m] for r in runs if r["row"] == row]
            x = i + (j - 1) * width
            ax.bar(x, statistics.fmean(vals), width, color=f"C{j}", alpha=0.6, label=m if i == 0 else None)
            ax.plot([x] * len(vals), vals, "k.", ms=4)
    ax.set_xticks(range(len(rows)), rows, rotation=15, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("LIMIT-small recall")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("trained on LIMIT-style data, evaluated on LIMIT-small (dots: seeds)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()  # rendered whole, then renamed into place: no half-written image
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--root", type=Path, default=REPO / "checkpoints" / "limit_train")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="an extra LightningCLI flag")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--plot", type=Path, help="only plot the runs of --out to this PNG")
    parser.add_argument("--report-only", action="store_true", help="collect finished runs, train nothing")
    parser.add_argument("--paired", metavar="BASE", help="add each row's paired difference from this row")
    parser.add_argument(
        "--cost", type=Path, help="only time each row's search at N = 1e5 and write JSON here"
    )
    parser.add_argument(
        "--collapse", type=Path, help="only measure the exports' vector spread, write JSON here"
    )
    args = parser.parse_args()
    if args.collapse:
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        rows = collapse(args.root)
        write_json(
            args.collapse,
            {"benchmark": "limit_collapse", "date": now, "machine": machine("cpu"), "rows": rows},
        )
        return
    if args.plot:
        runs = json.loads(args.out.read_text())["runs"]
        plot(runs, args.plot)
        print(table(runs))
        return
    if args.cost:
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        write_json(
            args.cost,
            {"benchmark": "limit_memory_cost", "date": now, "machine": machine("cpu"), **search_cost()},
        )
        return
    if not LIMIT.is_dir():
        raise SystemExit(f"{LIMIT}: LIMIT-small is needed (../shared/data)")
    runs = []
    for row in args.rows:
        for seed in args.seeds:
            got = run(row, seed, args.root, args.extra, args.report_only)
            if got is None:
                continue
            runs.append(got)
            means = {
                r: {m: statistics.fmean(x[m] for x in runs if x["row"] == r) for m in METRICS}
                for r in dict.fromkeys(x["row"] for x in runs)
            }
            write_json(
                args.out,
                {
                    "benchmark": "limit_training",
                    "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "machine": machine("cpu"),
                    "extra_flags": args.extra,
                    "runs": runs,
                    "means": means,
                },
            )
            print(f"{row} seed {seed}: " + ", ".join(f"{m} {runs[-1][m]:.3f}" for m in METRICS), flush=True)
    if args.paired and runs:
        result = json.loads(args.out.read_text())
        result["paired"] = {"base": args.paired, "rows": paired(args.root, runs, args.paired)}
        write_json(args.out, result)
        print(table(runs))
        print(paired_table(result["paired"]["rows"], args.paired))


if __name__ == "__main__":
    main()
