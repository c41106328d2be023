"""Collate examples into a typed batch (texts and ids; tokenisation happens in the models,
because candidates and selected passages are only known inside the training step)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from joint_rag.data.types import Example


@dataclass
class RAGBatch:
    """B examples as parallel lists.

    ``gold_grades`` holds each example's relevance (``Example.relevance``: passage id -> grade,
    explicit 0 judgements included; grade 1 per gold passage for binary data), for the
    retrieval metrics (nDCG uses the grades).
    """

    queries: list[str]
    answers: list[str]
    all_answers: list[list[str]]
    gold_ids: list[list[str]]
    candidate_ids: list[list[str]] | None
    instructions: list[str | None]
    example_ids: list[str]
    gold_grades: list[dict[str, float]]

    def __len__(self) -> int:
        return len(self.queries)


def collate_examples(examples: Sequence[Example]) -> RAGBatch:
    has_candidates = [ex.candidate_ids is not None for ex in examples]
    if any(has_candidates) and not all(has_candidates):
        raise ValueError("a batch mixes examples with and without candidate lists")
    return RAGBatch(
        queries=[ex.query for ex in examples],
        answers=[ex.answer for ex in examples],
        all_answers=[list(ex.answers) for ex in examples],
        gold_ids=[list(ex.gold_passage_ids) for ex in examples],
        candidate_ids=[list(ex.candidate_ids or []) for ex in examples] if all(has_candidates) else None,
        instructions=[ex.instruction for ex in examples],
        example_ids=[ex.example_id or str(i) for i, ex in enumerate(examples)],
        gold_grades=[ex.relevance for ex in examples],
    )
