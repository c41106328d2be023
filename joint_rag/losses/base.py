"""The one interface every objective implements.

The training module computes whatever generator signals the configured objectives declare
in `needs`, packs them into `ObjectiveInputs`, and sums the named terms each objective
returns, weighted as the YAML says. Objectives are small pure functions wrapped in
`nn.Module`s so they can be chosen with `class_path`/`init_args`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class ObjectiveInputs:
    """Everything an objective may read. Shapes use DESIGN.md's letters.

    Attributes:
        scores: (B, C) retriever scores over each query's candidates (differentiable).
        gold: (B, C) bool, which candidates are gold passages.
        inbatch_scores: (B, U) each query against the U unique candidates of the batch
            (in-batch negatives), or None.
        inbatch_gold: (B, U) bool gold mask for `inbatch_scores` (matched by passage id).
        selected: (B, K) long, candidates chosen by the top-k (indices into C).
        answer_nll: (B,) answer NLL given the selected memory, computed through the
            straight-through top-k (so its gradient reaches `scores`).
        token_logprobs: (B, K, T) log p(y_t | query, passage k, y_<t), one passage at a time.
        token_mask: (B, T) bool, the answer tokens of `token_logprobs`.
        passage_loglik: (B, K) log p(answer | query, passage k) = sum over answer tokens;
            a teacher signal (objectives that distil must detach it themselves).
        pretrain: dict of compressor-pretraining tensors (see losses/pretraining.py).
        top_k: K of the configured selector (objectives that draw their own K passages).
        set_reward: ``set_reward(samples, metric)``: (B, G, K) long candidate indices and a
            metric name ("loglik": -answer NLL per token, "f1": greedy-answer token F1) ->
            (B, G) detached rewards of the generator reading each sampled set.
        reference_scores: (B, C) detached scores of a reference retriever for the same
            candidates (the module's frozen snapshot of the initial retriever).
        answer_match: (B, C) bool, which candidates contain an answer string (whole words,
            case-insensitive; ``data.hard_negatives.contains_answer``): distant supervision.
        cand_cols: (B, C) long, each candidate's column in ``inbatch_scores`` (so a (B, C) mask
            maps onto the in-batch scores).
        query_vectors: (B, R, D) the queries' retrieval vectors (differentiable; R = 1 for a
            single vector, M for memory tokens).
        passage_vectors: (U, R, D) the retrieval vectors of the batch's U unique candidates, in
            ``inbatch_scores``' column order (detached where the passage encoder is frozen).

    With ``model.relevance_labels: false`` the module hides the labels: ``gold`` and
    ``inbatch_gold`` are all False, and objectives whose ``reads_labels`` is True are refused.
    """

    scores: Tensor
    gold: Tensor
    inbatch_scores: Tensor | None = None
    inbatch_gold: Tensor | None = None
    selected: Tensor | None = None
    answer_nll: Tensor | None = None
    token_logprobs: Tensor | None = None
    token_mask: Tensor | None = None
    passage_loglik: Tensor | None = None
    pretrain: dict[str, Tensor] | None = None
    top_k: int | None = None
    set_reward: Callable[[Tensor, str], Tensor] | None = None
    reference_scores: Tensor | None = None
    answer_match: Tensor | None = None
    cand_cols: Tensor | None = None
    query_vectors: Tensor | None = None
    passage_vectors: Tensor | None = None

    def selected_scores(self) -> Tensor:
        """(B, K) retriever scores of the selected candidates (differentiable)."""
        if self.selected is None:
            raise ValueError("selected is None: the objective needs the top-k selection")
        return self.scores.gather(1, self.selected)


class Objective(nn.Module):
    """Base class: `forward(inputs) -> {term_name: scalar tensor}`.

    Subclasses set `needs`, the generator signals they read, a subset of {"answer_nll",
    "token_logprobs", "passage_loglik", "pretrain", "set_reward", "reference_scores",
    "answer_match", "retrieval_vectors"}, so the module computes only those. Terms named in `logged_terms` are
    logged, not added to the loss. `reads_labels` is True for objectives that read the gold
    passage ids (``gold``, ``inbatch_gold``); label-free training refuses them.
    """

    needs: frozenset[str] = frozenset()
    logged_terms: frozenset[str] = frozenset()
    reads_labels: bool = False

    def forward(self, inputs: ObjectiveInputs) -> dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError
