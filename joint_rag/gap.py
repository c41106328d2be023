"""The usefulness gap: where the retriever's similarity ranking and the generator's usefulness
ranking of the same candidates part ways (inference side: no Lightning, no training code).

For each question the retriever's top-C candidates are scored twice:

* **similarity**: the retriever's score (the order ``RAGSystem.rank`` returns, best first; with
  per-example candidate lists, ``RAGSystem.rank_candidates``);
* **usefulness**: ``log p(answer | question, that passage alone)`` under the system's generator,
  the summed log-probability of the answer tokens (EOS included) when the prompt holds that one
  passage (``Generator.forward`` with K = 1: the passage text in text mode, its memory in memory
  mode). This is the per-passage log-likelihood the usefulness objectives read in training
  (``passage_loglik`` of ``JointRAGModule._per_passage``). Questions with several answers use the
  first (``Example.answer``, the training target).

Metrics per question (C candidates, index 0 = most similar):

* ``ndcg@k``: nDCG@k of the similarity order with gains ``g_c = softmax_c(loglik)``, the
  generator's posterior over the C candidates under a uniform prior. This gain is chosen because
  it is exactly the target distribution the distillation objectives (PDist, REPLUG LSR at
  temperature 1) pull the retriever towards, so nDCG 1 means there is nothing for them to
  correct at the top; it is invariant to the answer's length and to shifting all
  log-likelihoods, and it weighs candidates by how much more useful they are, not just by
  order (two near-equal passages swapped cost little). IDCG sorts the same gains.
* ``top1_differs``: 1 if the most similar candidate is not a most useful one
  (``loglik[0] < max(loglik) - 1e-4``: log-likelihoods within 1e-4 nats count as tied, which
  absorbs the float noise of batching; ties count as agreement).
* ``top1_beaten_by_1nat``: 1 if some candidate beats the most similar one by more than 1 nat
  (the answer more than e times as likely): a disagreement that is not a near-tie.
* ``loglik_gain``: ``max(loglik) - loglik[0]`` in nats (>= 0): what picking the most useful
  passage instead of the most similar one adds to the answer's log-likelihood.
* ``spearman`` / ``kendall``: rank correlation (Spearman's rho on average ranks, Kendall's
  tau-b) between the similarity scores and the log-likelihoods (0 where either is constant).
* ``useful_rank_of_top_sim``: 1-based rank, by usefulness, of the most similar candidate.
* with gold ids: ``gold_in_candidates``, ``gold_most_similar`` (candidate 0 is gold),
  ``gold_most_useful`` (the first most useful candidate is gold), over questions with gold ids.
* distant supervision (DPR's answer-string matching, ``data.hard_negatives.contains_answer``):
  ``answer_match_found``, some candidate contains an answer string; ``answer_match_is_gold``,
  the most similar such candidate is gold (its precision as a relevance label), over questions
  with gold ids and a match.

Each aggregate is the mean over questions with a 95% percentile bootstrap interval (seeded
resampling of questions); the per-question records come back too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from joint_rag.data.hard_negatives import contains_answer
from joint_rag.data.types import Example
from joint_rag.progress import progress_bar
from joint_rag.system import RAGSystem, eval_mode

GAIN = "softmax over the C candidates' answer log-likelihoods (the generator's posterior over passages)"
USEFULNESS = "log p(first answer | question, that passage alone): summed answer-token log-probs, EOS included"
TIE_TOL = 1e-4  # nats: log-likelihoods this close count as tied
METRICS = (
    "ndcg@k",
    "top1_differs",
    "top1_beaten_by_1nat",
    "loglik_gain",
    "spearman",
    "kendall",
    "useful_rank_of_top_sim",
    "gold_in_candidates",
    "gold_most_similar",
    "gold_most_useful",
    "answer_match_found",
    "answer_match_is_gold",
)


# ---------------------------------------------------------------------- metrics on one question
def softmax_gains(loglik: Sequence[float]) -> np.ndarray:
    """(C,) gains: the softmax of the candidates' log-likelihoods."""
    x = np.asarray(loglik, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def ndcg_at_k(gains_in_order: Sequence[float], k: int) -> float:
    """nDCG@k of a ranking whose i-th item (best first) has gain ``gains_in_order[i]``
    (log2 discounts; IDCG sorts the same gains; 1.0 when every gain is 0)."""
    g = np.asarray(gains_in_order, dtype=np.float64)
    disc = 1.0 / np.log2(np.arange(2, len(g) + 2))
    k = min(k, len(g))
    dcg = float((g[:k] * disc[:k]).sum())
    idcg = float((np.sort(g)[::-1][:k] * disc[:k]).sum())
    return dcg / idcg if idcg > 0 else 1.0


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):  # ties share their mean rank
        tied = x == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho (Pearson on average ranks); 0 where either side is constant."""
    ra, rb = _average_ranks(np.asarray(a, float)), _average_ranks(np.asarray(b, float))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else 0.0


def kendall_tau_b(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (ties corrected); 0 where either side is constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(len(a), 1)
    da, db = da[iu], db[iu]
    den = math.sqrt(float((da != 0).sum()) * float((db != 0).sum()))
    return float((da * db).sum() / den) if den > 0 else 0.0


def question_metrics(
    similarity: Sequence[float],
    loglik: Sequence[float],
    k: int,
    gold: Sequence[bool] | None = None,
    tol: float = TIE_TOL,
    answer_match: Sequence[bool] | None = None,
) -> dict[str, float]:
    """The metrics of one question whose C candidates are in similarity order (best first).

    Args:
        similarity: (C,) the retriever's scores, best first.
        loglik: (C,) each candidate's answer log-likelihood (usefulness), same order.
        k: the cut-off of nDCG.
        gold: (C,) whether each candidate is a gold passage; None: no gold ids.
        tol: log-likelihoods within ``tol`` nats of each other count as tied (float noise of
            batching: a row's padding changes the last digits).
        answer_match: (C,) whether each candidate contains an answer string; None: not computed.
    """
    ll = np.asarray(loglik, dtype=np.float64)
    best = float(ll.max())
    most_useful = int(np.flatnonzero(ll >= best - tol)[0])  # the first of tied maxima (the more similar)
    out = {
        "ndcg@k": ndcg_at_k(softmax_gains(ll), k),
        "top1_differs": float(ll[0] < best - tol),
        "top1_beaten_by_1nat": float(ll[0] < best - 1.0),
        "loglik_gain": best - float(ll[0]),
        "spearman": spearman(similarity, ll),
        "kendall": kendall_tau_b(similarity, ll),
        "useful_rank_of_top_sim": float(1 + (ll > ll[0] + tol).sum()),
    }
    if gold is not None:
        out["gold_in_candidates"] = float(any(gold))
        out["gold_most_similar"] = float(bool(gold[0]))
        out["gold_most_useful"] = float(bool(gold[most_useful]))
    if answer_match is not None:
        out["answer_match_found"] = float(any(answer_match))
        if gold is not None and any(answer_match):
            out["answer_match_is_gold"] = float(bool(gold[list(answer_match).index(True)]))
    return out


def bootstrap_mean(values: Sequence[float], resamples: int = 1000, seed: int = 0) -> dict:
    """Mean, 95% percentile bootstrap interval (seeded) and n of per-question values."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return {"mean": None, "ci95": [None, None], "n": 0}
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": float(v.mean()), "ci95": [float(lo), float(hi)], "n": int(len(v))}


def aggregate(records: list[dict], resamples: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Each metric's mean and 95% bootstrap interval over the questions that have it."""
    return {
        name: bootstrap_mean([r["metrics"][name] for r in records if name in r["metrics"]], resamples, seed)
        for name in METRICS
        if any(name in r["metrics"] for r in records)
    }


def sample_questions(examples: Sequence[Example], n: int, seed: int) -> list[Example]:
    """At most ``n`` examples, a seeded sample kept in split order (``jrag gap --questions N
    --seed S``)."""
    examples = list(examples)
    if len(examples) <= n:
        return examples
    import random

    return [examples[i] for i in sorted(random.Random(seed).sample(range(len(examples)), n))]


# ---------------------------------------------------------------------- the system's scores
def check_inputs(system: RAGSystem, examples: Sequence[Example], num_candidates: int, k: int) -> None:
    """ValueError (one line) for what the diagnostic cannot run on."""
    if not examples:
        raise ValueError("no questions: the usefulness gap needs at least one example")
    missing = [ex.example_id or ex.query for ex in examples if not ex.answers]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(examples)} examples have no answer (first: {missing[0]!r}): usefulness "
            "is the generator's answer log-likelihood, so the diagnostic needs data with answers"
        )
    if num_candidates < 2:
        raise ValueError(f"candidates C={num_candidates}: need at least 2 to compare rankings")
    n = len(system._corpus())
    if num_candidates > n:
        raise ValueError(f"candidates C={num_candidates} is larger than the corpus ({n} passages)")
    short = [ex for ex in examples if ex.candidate_ids is not None and len(ex.candidate_ids) < num_candidates]
    if short:
        raise ValueError(
            f"{len(short)} examples have fewer than C={num_candidates} candidates of their own "
            f"(first: {short[0].example_id or short[0].query!r})"
        )
    if k < 1:
        raise ValueError(f"k={k}: the nDCG cut-off must be >= 1")


@torch.no_grad()
def candidates(
    system: RAGSystem, examples: Sequence[Example], num_candidates: int, batch_size: int = 32
) -> list[tuple[list[str], list[float]]]:
    """Each question's top-C candidates by similarity (ids, scores), best first: the index's
    top-C, or the question's own candidate list sorted by similarity when it has one."""
    out: list[tuple[list[str], list[float]]] = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        queries = [ex.query for ex in batch]
        instructions = [ex.instruction for ex in batch]
        if all(ex.candidate_ids is not None for ex in batch):
            ranked = system.rank_candidates(queries, instructions, [list(ex.candidate_ids) for ex in batch])
        else:
            ranked = system.rank(queries, instructions, num_candidates)
        out += [(ids[:num_candidates], s[:num_candidates].tolist()) for ids, s in ranked]
    return out


@torch.no_grad()
def passage_logliks(
    system: RAGSystem,
    examples: Sequence[Example],
    candidate_ids: Sequence[Sequence[str]],
    batch_size: int = 16,
    show_progress: bool = True,
) -> list[list[float]]:
    """(B, C) log p(first answer | question, passage alone) under the system's generator (eval
    mode, no grad), the B*C (question, passage) rows batched ``batch_size`` at a time, rows of
    similar passage length together (less padding)."""
    generator = system.generator
    rows = [(b, c) for b, ids in enumerate(candidate_ids) for c in range(len(ids))]
    texts = {p: t for ids in candidate_ids for p, t in zip(ids, system.texts_of(list(ids)))}
    rows.sort(key=lambda bc: len(texts[candidate_ids[bc[0]][bc[1]]]))
    out = [[0.0] * len(ids) for ids in candidate_ids]
    with eval_mode(system), progress_bar("usefulness", len(rows), show_progress) as advance:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            ids = [candidate_ids[b][c] for b, c in chunk]
            queries = [examples[b].query for b, _ in chunk]
            answers = [examples[b].answer for b, _ in chunk]
            instructions = [examples[b].instruction for b, _ in chunk]
            if generator.mode == "memory":
                memory = system.memory_of(ids).unsqueeze(1)  # (n, 1, M, H)
                gen = generator(queries, answers, memory=memory, instructions=instructions)
            else:
                gen = generator(
                    queries, answers, passages=[[texts[p]] for p in ids], instructions=instructions
                )
            for (b, c), ll in zip(chunk, gen.token_logprobs.sum(-1).float().cpu().tolist()):
                out[b][c] = ll
            advance(len(chunk))
    return out


def usefulness_gap(
    system: RAGSystem,
    examples: Sequence[Example],
    num_candidates: int = 10,
    k: int | None = None,
    batch_size: int = 16,
    resamples: int = 1000,
    seed: int = 0,
    show_progress: bool = True,
) -> dict:
    """How well the retriever's similarity ranking of its top-C agrees with the generator's
    usefulness ranking of the same passages (see the module docstring for every definition).

    Args:
        system: a RAGSystem with its corpus attached (the index is built if missing).
        examples: questions with answers (the first answer is the target).
        num_candidates: C, the retriever's top-C per question.
        k: nDCG cut-off (default C).
        batch_size: (question, passage) rows per generator forward.
        resamples, seed: the bootstrap of the 95% intervals.
        show_progress: progress bars.

    Returns:
        {"questions", "candidates", "k", "usefulness", "gain", "generator_mode", "metrics":
        {name: {"mean", "ci95": [lo, hi], "n"}}, "per_question": [records]}.

    Raises:
        ValueError: no examples, an example without answers, C < 2 or C larger than the corpus.
    """
    k = num_candidates if k is None else k
    examples = list(examples)
    check_inputs(system, examples, num_candidates, k)
    ranked = candidates(system, examples, num_candidates)
    ids = [row for row, _ in ranked]
    logliks = passage_logliks(system, examples, ids, batch_size, show_progress)
    records = []
    for ex, (row, sims), ll in zip(examples, ranked, logliks):
        gold_ids = set(ex.gold_passage_ids)
        gold = [p in gold_ids for p in row] if gold_ids else None
        match = [contains_answer(t, ex.answers) for t in system.texts_of(row)]
        records.append(
            {
                "example_id": ex.example_id,
                "query": ex.query,
                "answer": ex.answer,
                "candidate_ids": row,
                "similarity": sims,
                "loglik": ll,
                "gold": gold,
                "answer_match": match,
                "metrics": question_metrics(sims, ll, k, gold, answer_match=match),
            }
        )
    return {
        "questions": len(records),
        "candidates": num_candidates,
        "k": k,
        "usefulness": USEFULNESS,
        "gain": GAIN,
        "generator_mode": system.generator.mode,
        "bootstrap": {"resamples": resamples, "seed": seed, "interval": "95% percentile"},
        "metrics": aggregate(records, resamples, seed),
        "per_question": records,
    }
