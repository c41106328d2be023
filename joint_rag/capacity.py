"""The free-embedding capacity experiment (LIMIT, Weller et al. 2025, arXiv 2508.21038, section 4).

For an embedding dimension d and k = 2: with n documents, is there a set of vectors such that
each of the C(n, 2) queries retrieves exactly its own pair of documents as its top 2? The
vectors are optimised directly ("free embeddings", no encoder): the best case for any model of
that dimension. ``critical_n`` finds the largest n for which the optimisation succeeds
(galloping n = 4, 8, 16, ... to the first failure, then binary search between the last success
and it); LIMIT fits the critical n as -10.5 + 4.03 d + 0.052 d^2 + 0.0037 d^3 (``limit_fit``).

Multi-vector memory: each query and document holds M vectors of d' = d / M dimensions (equal
total dimension), scored by the project's own scorers (``joint_rag.kernels.similarity``):
``cosine`` (M = 1), ``flat_cosine`` (the cosine of the flattened M*d' vector: the same function
class as single-vector cosine of dimension d, so it should match it) and ``maxsim`` (ColBERT's
sum over query vectors of the best document vector; each vector unit-normalised first, as
ColBERT normalises its token vectors; ``Settings.normalize_maxsim = False`` keeps raw dot products,
as the project's own ``maxsim`` scorer does).

Optimisation, per (n, d, M, similarity): queries (m, M, d') and documents (n, M, d') drawn from
a seeded normal; full batch; Adam at ``lr`` (0.01); loss: for each query and each of its two
documents, -log softmax of that document against the n - 2 others (the other positive left
out), scores divided by ``temperature`` (0.05); checked every ``check_every`` steps; success
when every query's two documents both score above all its other documents (strictly); it
stops at success, after ``max_steps``, or when the count of solved queries has not improved for
``patience`` checks (counted as failure).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from joint_rag.kernels import similarity as score

SIMILARITIES = ("cosine", "flat_cosine", "maxsim")


def limit_fit(d: float) -> float:
    """LIMIT's fitted critical n for top-2 at dimension d."""
    return -10.5 + 4.03 * d + 0.052 * d**2 + 0.0037 * d**3


@dataclass
class Trial:
    """One optimisation: did every query retrieve exactly its pair?"""

    n: int
    solved: bool
    solved_queries: int
    queries: int
    steps: int
    seconds: float


@dataclass
class Settings:
    lr: float = 0.01
    temperature: float = 0.05
    max_steps: int = 4000
    check_every: int = 50
    patience: int = 10
    seed: int = 0
    normalize_maxsim: bool = True  # unit-normalise each vector before MaxSim (ColBERT); False: raw dots


def _scores(q: Tensor, p: Tensor, similarity: str, normalize_maxsim: bool = True) -> Tensor:
    if similarity == "maxsim" and normalize_maxsim:
        q, p = F.normalize(q, dim=-1), F.normalize(p, dim=-1)
    if similarity == "cosine":
        q, p = q[:, 0], p[:, 0]  # (m, d), (n, d): single vectors
    return score(q, p, similarity)  # (m, n)


def solved_queries(scores: Tensor, pairs: Tensor) -> Tensor:
    """(m,) bool: both of the query's documents score strictly above every other document."""
    pos = scores.gather(1, pairs)  # (m, 2)
    neg = scores.scatter(1, pairs, float("-inf"))  # (m, n)
    return pos.min(dim=1).values > neg.max(dim=1).values


def pair_loss(scores: Tensor, pairs: Tensor, temperature: float) -> Tensor:
    """Mean over queries and positives of -log softmax(positive vs the n - 2 negatives)."""
    logits = scores / temperature  # (m, n)
    losses = []
    for own, other in ((0, 1), (1, 0)):
        masked = logits.scatter(1, pairs[:, other : other + 1], float("-inf"))  # drop the other positive
        losses.append(torch.logsumexp(masked, dim=1) - logits.gather(1, pairs[:, own : own + 1])[:, 0])
    return torch.stack(losses).mean()


def try_n(
    n: int, d: int, vectors: int = 1, similarity: str = "cosine", settings: Settings | None = None
) -> Trial:
    """Optimise free embeddings for all C(n, 2) top-2 sets (see the module docstring)."""
    s = settings or Settings()
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    if similarity == "cosine" and vectors != 1:
        raise ValueError("cosine is single-vector: use vectors = 1 (flat_cosine or maxsim for M > 1)")
    if d % vectors:
        raise ValueError(f"d = {d} is not divisible by M = {vectors} (equal total dimension M * d' = d)")
    if n < 3:
        raise ValueError(f"n must be >= 3 (two positives and a negative), got {n}")
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(s.seed * 1_000_003 + n)
    pairs = torch.tensor(list(itertools.combinations(range(n), 2)))  # (m, 2)
    m, dv = len(pairs), d // vectors
    q = torch.randn(m, vectors, dv, generator=gen).requires_grad_()
    p = torch.randn(n, vectors, dv, generator=gen).requires_grad_()
    opt = torch.optim.Adam([q, p], lr=s.lr)
    best, stale, step, solved = -1, 0, 0, 0
    for step in range(1, s.max_steps + 1):
        opt.zero_grad()
        loss = pair_loss(_scores(q, p, similarity, s.normalize_maxsim), pairs, s.temperature)
        loss.backward()
        opt.step()
        if step % s.check_every == 0 or step == s.max_steps:
            with torch.no_grad():
                solved = int(solved_queries(_scores(q, p, similarity, s.normalize_maxsim), pairs).sum())
            if solved == m:
                break
            stale = 0 if solved > best else stale + 1
            best = max(best, solved)
            if stale >= s.patience:
                break
    return Trial(n, solved == m, solved, m, step, time.perf_counter() - t0)


def critical_n(
    d: int, vectors: int = 1, similarity: str = "cosine", settings: Settings | None = None, n_max: int = 4096
) -> dict:
    """The largest n whose every top-2 set the optimisation makes retrievable (galloping, then
    binary search; every trial is kept). Returns d, M, similarity, critical_n, the trials and
    LIMIT's fitted value at d."""
    trials: list[Trial] = []

    def ok(n: int) -> bool:
        trial = try_n(n, d, vectors, similarity, settings)
        trials.append(trial)
        return trial.solved

    lo, hi = 3, None  # n = 3 (one negative) is always solvable: two positives above one
    n = 4
    while n <= n_max:
        if ok(n):
            lo, n = n, n * 2
        else:
            hi = n
            break
    if hi is None:
        hi = n_max + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return {
        "d": d,
        "vectors": vectors,
        "dim_per_vector": d // vectors,
        "similarity": similarity,
        "critical_n": lo,
        "limit_fit": limit_fit(d),
        "capped": hi > n_max,
        "trials": [asdict(t) for t in trials],
    }


__all__ = [
    "SIMILARITIES",
    "Settings",
    "Trial",
    "critical_n",
    "limit_fit",
    "pair_loss",
    "solved_queries",
    "try_n",
]


def plot(rows: list[dict], path) -> None:
    """Critical n against d, one line per (similarity, M), with LIMIT's fitted curve; PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from joint_rag.atomic import atomic_write

    fig, ax = plt.subplots(figsize=(6, 4))
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        name = "maxsim (raw dots)" if r.get("raw_maxsim") else r["similarity"]
        groups.setdefault((name, r["vectors"]), []).append(r)
    for (name, M), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["d"])
        style = "--" if name == "flat_cosine" else "-"
        ax.plot(
            [r["d"] for r in rs], [r["critical_n"] for r in rs], style, marker="o", label=f"{name}, M = {M}"
        )
    ds = sorted({r["d"] for r in rows})
    if ds:
        grid = [ds[0] + (ds[-1] - ds[0]) * i / 50 for i in range(51)]
        ax.plot(grid, [max(0.0, limit_fit(d)) for d in grid], ":", color="grey", label="LIMIT fit")
    ax.set_xlabel("total dimension d (M vectors of d / M)")
    ax.set_ylabel("critical n (every top-2 set retrievable)")
    ax.legend()
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
