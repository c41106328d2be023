"""Answer metrics (SQuAD EM / token F1) and retrieval metrics (recall@k, MRR@k, nDCG@k, all-gold@k).

Two ``torchmetrics.Metric`` classes accumulate sums and counts (``dist_reduce_fx="sum"``) so they
merge across update calls and DDP ranks. All values are fractions in [0, 1], not percentages.

Answer normalisation follows the official SQuAD v1.1 evaluation script: lower-case, drop
punctuation, drop the articles a/an/the, collapse whitespace. Token F1 treats an empty
normalised answer as in SQuAD v2: F1 = 1 if both prediction and gold are empty, else 0.

Retrieval math is torchmetrics' functional retrieval API (``retrieval_recall``,
``retrieval_reciprocal_rank``, ``retrieval_normalized_dcg``, each with ``top_k``), applied per
query. Definitions, per query, with ``gold`` the relevant passages: the stated threshold is
grade > 0, which for the integer grades of qrels files (TREC, BEIR: 0, 1, 2, ...) is grade >= 1;
an explicit 0 judgement is judged non-relevant (as is an unjudged passage); binary gold (a
collection of ids) is grade 1 each:
- recall@k = |gold in top k| / |gold|  (the usual hit@k, 0 or 1, when there is one gold passage);
- MRR@k = 1 / rank of the first gold passage in the top k, 0 if none;
- nDCG@k = DCG@k / IDCG@k with DCG@k = sum_{i=1..k} grade_i / log2(i + 1) (linear gain, as
  trec_eval and BEIR) and IDCG@k the DCG of the gold grades sorted in descending order;
- all_gold@k = 1 if every gold passage is in the top k, else 0 (recall@k == 1).

What ``RetrievalMetrics`` adds around torchmetrics, which scores one list of (score, relevance)
items per query: it turns a ranking of passage ids into such a list (descending scores, the
gold grade or 0 as relevance) with these rules:
- a passage id repeated in a ranking counts once, at its best rank; the repeat still occupies
  its position (it becomes a non-relevant placeholder item, it is not dropped);
- gold passages missing from the ranking count in the recall denominator and in the ideal DCG,
  but never inside the top k: the ranking is padded with non-relevant placeholders up to the
  largest cut-off before the missing gold items are appended with lower scores;
- queries without any gold passage are skipped (not counted), as in BEIR;
- per-query values are summed into states with ``dist_reduce_fx="sum"`` (plus a query count),
  so means are exact across update calls and DDP ranks.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Collection, Hashable, Mapping, Sequence

import torch
import torchmetrics
from torch import Tensor
from torchmetrics.functional.retrieval import (
    retrieval_normalized_dcg,
    retrieval_recall,
    retrieval_reciprocal_rank,
)

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


def answer_scores(
    predictions: Sequence[str], answers: Sequence[str | Sequence[str]]
) -> list[dict[str, float]]:
    """Per-question ``{"em", "f1"}`` of B predictions (what ``AnswerMetrics.update`` sums)."""
    return [
        {"em": exact_match(p, a), "f1": f1_score(p, a)} for p, a in zip(predictions, answers, strict=True)
    ]


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
        """Returns ``{"em", "f1"}`` as float32 scalars (NaN before any update: no answers is
        not a score of 0)."""
        count = self.count.float()
        return {"em": (self.em_sum / count).float(), "f1": (self.f1_sum / count).float()}


# --------------------------------------------------------------------------- retrieval
def _grades(gold: Gold) -> dict[Hashable, float]:
    """Gold passages with positive grade: ids -> 1.0, or the given id -> grade mapping."""
    if isinstance(gold, str):
        raise TypeError(f"gold must be a collection of passage ids, got the string {gold!r}")
    items = gold.items() if isinstance(gold, Mapping) else ((pid, 1.0) for pid in gold)
    return {pid: float(grade) for pid, grade in items if grade > 0}


def _cutoffs(name: str, value: Sequence[int], *, non_empty: bool) -> tuple[int, ...]:
    """Validated cut-offs: a sequence of ints >= 1 (non-empty if asked)."""
    if isinstance(value, (int, str)) or not isinstance(value, Sequence):
        raise ValueError(
            f"RetrievalMetrics: {name} must be a sequence of cut-offs (ints >= 1), got {value!r}"
        )
    if non_empty and not value:
        raise ValueError(f"RetrievalMetrics: {name} must be non-empty")
    bad = [k for k in value if not isinstance(k, int) or k < 1]
    if bad:
        raise ValueError(f"RetrievalMetrics: cut-offs must be ints >= 1, got {name}={tuple(value)!r}")
    return tuple(value)


def _cutoff(name: str, value: int) -> int:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"RetrievalMetrics: cut-offs must be ints >= 1, got {name}={value!r}")
    return value


class RetrievalMetrics(torchmetrics.Metric):
    """Mean recall@k (several k), MRR@k, nDCG@k and all-gold@k (several k) over queries.

    ``update(ranked, gold)``: ``ranked`` is B rankings, best first, as lists of passage ids or a
    (B, k) tensor of index rows; ``gold`` is B relevant sets of the same kind of ids, each a
    collection (binary relevance) or a dict id -> grade (graded; grade <= 0 is not relevant).
    ``compute()`` returns e.g. ``{"recall@1", "recall@5", "mrr@10", "ndcg@10"}`` in [0, 1], then
    ``"all_gold@k"`` for each k in ``all_gold_ks``. The per-query math is torchmetrics'
    functional retrieval API; all_gold@k is computed from it as torchmetrics' recall@k == 1.
    Queries without gold passages are skipped; see the module docstring for the definitions and
    for how repeats and gold missing from a ranking are handled.

    Args:
        recall_ks: cut-offs for recall (non-empty).
        mrr_k: cut-off for MRR.
        ndcg_k: cut-off for nDCG.
        all_gold_ks: cut-offs for all-gold@k (1 if every gold passage is in the top k); may be empty.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        recall_ks: Sequence[int] = (1, 5),
        mrr_k: int = 10,
        ndcg_k: int = 10,
        all_gold_ks: Sequence[int] = (),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.recall_ks = _cutoffs("recall_ks", recall_ks, non_empty=True)
        self.mrr_k, self.ndcg_k = _cutoff("mrr_k", mrr_k), _cutoff("ndcg_k", ndcg_k)
        self.all_gold_ks = _cutoffs("all_gold_ks", all_gold_ks, non_empty=False)
        self.max_k = max(*self.recall_ks, self.mrr_k, self.ndcg_k, *self.all_gold_ks)
        self.names = [f"recall@{k}" for k in self.recall_ks] + [f"mrr@{mrr_k}", f"ndcg@{ndcg_k}"]
        self.names += [f"all_gold@{k}" for k in self.all_gold_ks]
        self.add_state("sums", torch.zeros(len(self.names), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _query_values(self, ranking: Sequence[Hashable], gold: Gold) -> list[float] | None:
        """The values of one query in the order of ``self.names``; None without gold passage."""
        grades = _grades(gold)
        if not grades:
            return None
        # relevance per position of the top max_k; a repeat is a non-relevant placeholder there
        seen: set[Hashable] = set()
        relevance: list[float] = []
        for pid in ranking[: self.max_k]:
            relevance.append(grades[pid] if pid in grades and pid not in seen else 0.0)
            seen.add(pid)
        relevance += [0.0] * (self.max_k - len(relevance))  # placeholders up to the largest cut-off
        relevance += [grade for pid, grade in grades.items() if pid not in seen]  # missing gold, last
        target = torch.tensor(relevance, dtype=torch.float64)
        relevant = target > 0
        # distinct positive scores, best first (torchmetrics ignores items with score <= 0)
        preds = torch.arange(len(relevance), 0, -1, dtype=torch.float32)
        recall = {
            k: retrieval_recall(preds, relevant, top_k=k).item() for k in {*self.recall_ks, *self.all_gold_ks}
        }
        values = [recall[k] for k in self.recall_ks]
        values.append(retrieval_reciprocal_rank(preds, relevant, top_k=self.mrr_k).item())
        values.append(retrieval_normalized_dcg(preds, target, top_k=self.ndcg_k).item())
        values += [float(recall[k] == 1.0) for k in self.all_gold_ks]
        return values

    def per_query(
        self, ranked: Sequence[Sequence[Hashable]] | Tensor, gold: Sequence[Gold]
    ) -> list[dict[str, float] | None]:
        """The values of each query of a batch, ``{name: value}`` (None for a query without gold
        passage, which ``update`` skips); adds nothing to the states."""
        if isinstance(ranked, Tensor):
            ranked = ranked.tolist()
        if len(ranked) != len(gold):
            raise ValueError(f"RetrievalMetrics.per_query: {len(ranked)} rankings but {len(gold)} gold sets")
        out: list[dict[str, float] | None] = []
        for ranking, relevant in zip(ranked, gold):
            values = self._query_values(list(ranking), relevant)
            out.append(None if values is None else dict(zip(self.names, values)))
        return out

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
            values = self._query_values(list(ranking), relevant)
            if values is None:  # no gold passage: skipped
                continue
            batch_sums = [s + v for s, v in zip(batch_sums, values)]
            used += 1
        # out-of-place: states may be inference tensors after a validate() run
        self.sums = self.sums + torch.tensor(batch_sums, dtype=torch.float64, device=self.sums.device)
        self.count = self.count + used

    def compute(self) -> dict[str, Tensor]:
        """Returns ``{name: mean}`` as float32 scalars (NaN before any counted query)."""
        means = (self.sums / self.count.float()).float()
        return {name: means[i] for i, name in enumerate(self.names)}
