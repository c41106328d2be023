"""Answer metrics (SQuAD EM / token F1) and retrieval metrics (recall@k, MRR@k, nDCG@k).

Pure per-example functions do the math; two ``torchmetrics.Metric`` classes accumulate sums and
counts (``dist_reduce_fx="sum"``) so they merge across update calls and DDP ranks. All values
are fractions in [0, 1], not percentages.

Answer normalisation follows the official SQuAD v1.1 evaluation script: lower-case, drop
punctuation, drop the articles a/an/the, collapse whitespace. Token F1 treats an empty
normalised answer as in SQuAD v2: F1 = 1 if both prediction and gold are empty, else 0.

Retrieval definitions, per query, with ``gold`` the relevant passages (grade > 0):
- recall@k = |gold in top k| / |gold|  (the usual hit@k, 0 or 1, when there is one gold passage);
- MRR@k = 1 / rank of the first gold passage in the top k, 0 if none;
- nDCG@k = DCG@k / IDCG@k with DCG@k = sum_{i=1..k} grade_i / log2(i + 1) (linear gain, as
  trec_eval and BEIR) and IDCG@k the DCG of the gold grades sorted in descending order.
Queries without any gold passage are skipped (not counted), as in BEIR. A passage id repeated
in a ranking counts once, at its best rank.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Collection, Hashable, Mapping, Sequence

import torch
import torchmetrics
from torch import Tensor

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")

Gold = Mapping[Hashable, float] | Collection[Hashable]
"""Relevant passages of one query: ids (binary relevance) or id -> grade (graded relevance)."""


# --------------------------------------------------------------------------- answers
def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower, remove punctuation, articles (a/an/the) and extra whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _as_answers(answers: str | Sequence[str]) -> list[str]:
    answers = [answers] if isinstance(answers, str) else list(answers)
    if not answers:
        raise ValueError("no gold answers given; use [''] for an unanswerable question")
    return answers


def exact_match(prediction: str, answers: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in _as_answers(answers)))


def _token_f1(prediction: str, answer: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(answer).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, answers: str | Sequence[str]) -> float:
    """Token-level F1 between the normalised prediction and gold answers (max over answers)."""
    return max(_token_f1(prediction, a) for a in _as_answers(answers))


class AnswerMetrics(torchmetrics.Metric):
    """Mean exact match and token F1 over generated answers.

    ``update(predictions, answers)`` with B predicted strings and, per prediction, one gold
    string or a list of them; ``compute()`` returns ``{"em": ..., "f1": ...}`` in [0, 1].
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("em_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("f1_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str], answers: Sequence[str | Sequence[str]]) -> None:
        """Adds a batch.

        Args:
            predictions: B predicted answers.
            answers: B entries, each a gold answer or a list of acceptable gold answers.
        """
        if isinstance(predictions, str):
            raise TypeError("AnswerMetrics.update: predictions must be a list of strings, got one str")
        if len(predictions) != len(answers):
            raise ValueError(
                f"AnswerMetrics.update: {len(predictions)} predictions but {len(answers)} answers"
            )
        # out-of-place: states may be inference tensors after a validate() run
        self.em_sum = self.em_sum + sum(exact_match(p, a) for p, a in zip(predictions, answers))
        self.f1_sum = self.f1_sum + sum(f1_score(p, a) for p, a in zip(predictions, answers))
        self.count = self.count + len(predictions)

    def compute(self) -> dict[str, Tensor]:
        """Returns ``{"em", "f1"}`` as float32 scalars (0 before any update)."""
        count = self.count.clamp_min(1)
        return {"em": (self.em_sum / count).float(), "f1": (self.f1_sum / count).float()}


# --------------------------------------------------------------------------- retrieval
def _grades(gold: Gold) -> dict[Hashable, float]:
    """Gold passages with positive grade: ids -> 1.0, or the given id -> grade mapping."""
    if isinstance(gold, str):
        raise TypeError(f"gold must be a collection of passage ids, got the string {gold!r}")
    items = gold.items() if isinstance(gold, Mapping) else ((pid, 1.0) for pid in gold)
    return {pid: float(grade) for pid, grade in items if grade > 0}


def _first_hits(ranked: Sequence[Hashable], k: int) -> list[Hashable | None]:
    """Top-k ranking with repeated ids blanked (each id counts once, at its best rank)."""
    seen: set[Hashable] = set()
    out: list[Hashable | None] = []
    for pid in ranked[:k]:
        out.append(None if pid in seen else pid)
        seen.add(pid)
    return out


def recall_at_k(ranked: Sequence[Hashable], gold: Gold, k: int) -> float:
    """Fraction of gold passages in the top k (hit@k for one gold passage); nan without gold."""
    grades = _grades(gold)
    if not grades:
        return math.nan
    return len(set(ranked[:k]) & grades.keys()) / len(grades)


def mrr_at_k(ranked: Sequence[Hashable], gold: Gold, k: int) -> float:
    """1 / rank (1-based) of the first gold passage in the top k, 0 if none; nan without gold."""
    grades = _grades(gold)
    if not grades:
        return math.nan
    return next((1.0 / rank for rank, pid in enumerate(ranked[:k], start=1) if pid in grades), 0.0)


def ndcg_at_k(ranked: Sequence[Hashable], gold: Gold, k: int) -> float:
    """nDCG@k with linear gain and log2(rank + 1) discount; nan without gold.

    DCG@k = sum_{rank=1..k} grade(ranked[rank-1]) / log2(rank + 1); IDCG@k is the DCG of the
    gold grades sorted descending, truncated to k.
    """
    grades = _grades(gold)
    if not grades:
        return math.nan
    dcg = sum(
        grades.get(pid, 0.0) / math.log2(rank + 1) for rank, pid in enumerate(_first_hits(ranked, k), 1)
    )
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum(grade / math.log2(rank + 1) for rank, grade in enumerate(ideal, start=1))
    return dcg / idcg


class RetrievalMetrics(torchmetrics.Metric):
    """Mean recall@k (several k), MRR@k and nDCG@k over queries.

    ``update(ranked, gold)``: ``ranked`` is B rankings, best first, as lists of passage ids or a
    (B, k) tensor of index rows; ``gold`` is B relevant sets of the same kind of ids, each a
    collection (binary relevance) or a dict id -> grade (graded; grade <= 0 is not relevant).
    ``compute()`` returns e.g. ``{"recall@1", "recall@5", "mrr@10", "ndcg@10"}`` in [0, 1].
    Queries without gold passages are skipped; see the module docstring for the definitions.

    Args:
        recall_ks: cut-offs for recall.
        mrr_k: cut-off for MRR.
        ndcg_k: cut-off for nDCG.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self, recall_ks: Sequence[int] = (1, 5), mrr_k: int = 10, ndcg_k: int = 10, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        bad = [k for k in (*recall_ks, mrr_k, ndcg_k) if not isinstance(k, int) or k < 1]
        if bad or not recall_ks:
            raise ValueError(
                f"RetrievalMetrics: cut-offs must be ints >= 1 (and recall_ks non-empty), got {bad}"
            )
        self.recall_ks = tuple(recall_ks)
        self.mrr_k, self.ndcg_k = mrr_k, ndcg_k
        self.names = [f"recall@{k}" for k in self.recall_ks] + [f"mrr@{mrr_k}", f"ndcg@{ndcg_k}"]
        self.add_state("sums", torch.zeros(len(self.names), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, ranked: Sequence[Sequence[Hashable]] | Tensor, gold: Sequence[Gold]) -> None:
        """Adds a batch.

        Args:
            ranked: B rankings, best first: lists of passage ids, or rows (B, k) long.
            gold: B gold sets (ids, or dict id -> grade) in the same id space as ``ranked``.
        """
        if isinstance(ranked, Tensor):
            if ranked.dim() != 2:
                raise ValueError(f"RetrievalMetrics.update: rows must be (B, k), got {tuple(ranked.shape)}")
            ranked = ranked.tolist()
        if len(ranked) != len(gold):
            raise ValueError(f"RetrievalMetrics.update: {len(ranked)} rankings but {len(gold)} gold sets")
        batch_sums = [0.0] * len(self.names)
        used = 0
        for ranking, relevant in zip(ranked, gold):
            ranking = list(ranking)
            values = [recall_at_k(ranking, relevant, k) for k in self.recall_ks]
            values += [mrr_at_k(ranking, relevant, self.mrr_k), ndcg_at_k(ranking, relevant, self.ndcg_k)]
            if math.isnan(values[0]):  # no gold passage: skipped
                continue
            batch_sums = [s + v for s, v in zip(batch_sums, values)]
            used += 1
        self.sums = self.sums + torch.tensor(batch_sums, dtype=torch.float64, device=self.sums.device)
        self.count = self.count + used

    def compute(self) -> dict[str, Tensor]:
        """Returns ``{name: mean}`` as float32 scalars (0 before any counted query)."""
        means = (self.sums / self.count.clamp_min(1)).float()
        return {name: means[i] for i, name in enumerate(self.names)}
