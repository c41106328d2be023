"""JointRAG: an exported system (``joint_rag.artifact``) that retrieves and answers, without Lightning.

    rag = JointRAG.from_pretrained("checkpoints/quickstart/export")
    rag.retrieve(["Who founded Veloria?"], k=5)   # [[(passage_id, score), ...]]
    rag.answer(["Who founded Veloria?"])          # [{"answer": ..., "passages": [...]}]

It wraps one ``RAGSystem``, the same object the training module holds, so on the same inputs it
returns exactly the scores and greedy answers of the trained system.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from joint_rag.artifact import load_system
from joint_rag.data.types import Corpus, InstructionPair
from joint_rag.errors import ExportFormatError
from joint_rag.system import RAGSystem

__all__ = ["ExportFormatError", "JointRAG"]


class JointRAG:
    """A loaded retriever + generator, ready to retrieve and answer (eval mode, no_grad).

    Attributes:
        system: the ``RAGSystem`` (compressor, query encoder, generator, selector, index).
        manifest: the export's ``joint_rag.json``.
    """

    def __init__(self, system: RAGSystem, manifest: dict[str, Any] | None = None) -> None:
        self.system = system.eval()
        self.manifest = manifest or {}

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> JointRAG:
        """Load and verify an export folder written by ``jrag export``.

        Args:
            directory: the export folder.
            device: where the models and the index live (the index searches through
                ``joint_rag.kernels``: the Triton kernel on CUDA).

        Raises:
            ExportFormatError: missing or invalid files, another ``format_version``, or parts
                that disagree; the message names the file and what to do.
        """
        return cls(*load_system(directory, device))

    @property
    def corpus(self) -> Corpus:
        return self.system.corpus

    def retrieve(
        self, queries: list[str], k: int = 5, instructions: list[str | None] | None = None
    ) -> list[list[tuple[str, float]]]:
        """The k best passages per query with their similarity scores, best first.

        Args:
            queries: B questions.
            k: passages per query (at most the corpus size).
            instructions: optional B instructions (prepended to the queries).

        Returns:
            B lists of (passage_id, score).
        """
        _check_questions(queries, instructions)
        if k < 1:
            raise ValueError(f"retrieve: k must be >= 1, got {k}")
        ranked = self.system.rank(queries, instructions, max(k, 10, self.system.num_candidates))
        return [list(zip(ids[:k], scores[:k].tolist())) for ids, scores in ranked]

    def answer(
        self, questions: list[str], instructions: list[str | None] | None = None
    ) -> list[dict[str, Any]]:
        """Retrieve, select the top-K of C candidates and answer greedily.

        Args:
            questions: B questions.
            instructions: optional B instructions.

        Returns:
            B dicts: ``answer`` (str) and ``passages`` (the K passages read: id, title, text, score).
        """
        _check_questions(questions, instructions)
        system = self.system
        ranked = system.rank(questions, instructions, max(10, system.num_candidates))
        answers = system.answer(questions, instructions, [ids[: system.num_candidates] for ids, _ in ranked])
        out = []
        for text, (ids, scores) in zip(answers, ranked):
            passages = []
            for pid, score in zip(ids[: system.selector.k], scores.tolist()):
                p = self.corpus[self.corpus.index_of(pid)]
                passages.append({"id": pid, "title": p.title, "text": p.text, "score": score})
            out.append({"answer": text, "passages": passages})
        return out

    def instruction_following(self, pairs: list[InstructionPair]) -> dict:
        """p-MRR of the retriever on instruction pairs (``RAGSystem.instruction_following``)."""
        return self.system.instruction_following(pairs)


def _check_questions(questions: list[str], instructions: list[str | None] | None) -> None:
    if isinstance(questions, str):
        raise ValueError("pass a list of questions, e.g. [question], not a single string")
    if not questions:
        raise ValueError("no questions given: pass a non-empty list of question strings")
    empty = [i for i, q in enumerate(questions) if not isinstance(q, str) or not q.strip()]
    if empty:
        raise ValueError(f"question {empty[0]} is empty or not a string; every question needs text")
    if instructions is not None and len(instructions) != len(questions):
        raise ValueError(
            f"{len(instructions)} instructions for {len(questions)} questions; pass one each or None"
        )
