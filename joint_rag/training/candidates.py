"""Candidates and the corpus index for JointRAGModule: build/refresh the index, pick training
candidates, rank for evaluation, and answer from candidates (shared by evaluation and the
downstream pipeline)."""

from __future__ import annotations

import random

import torch
from torch import Tensor

from joint_rag.data.collate import RAGBatch
from joint_rag.index.passage_index import PassageIndex
from joint_rag.models.scoring import index_vectors, query_index_vectors, score_candidates
from joint_rag.progress import progress_bar
from joint_rag.training.modes import eval_mode


class CandidateMixin:
    """Methods that need ``self.compressor``, ``self.query_encoder``, ``self.corpus`` etc."""

    encode_batch_size: int = 64

    def encode_queries(self, queries: list[str], instructions: list[str | None] | None = None) -> Tensor:
        """(B, R, D) query retrieval vectors (instruction prepended when given)."""
        texts = [f"{i} {q}" if i else q for q, i in zip(queries, instructions or [None] * len(queries))]
        # queries need retrieval vectors only (memory retrieval still runs the memory-token pass)
        return self.query_encoder(texts, need_memory=False).retrieval

    def _current_step(self) -> int:
        trainer = getattr(self, "_trainer", None)
        return int(trainer.global_step) if trainer is not None else 0

    # ------------------------------------------------------------------ index
    @torch.no_grad()
    def encode_corpus(
        self, batch_size: int | None = None, show_progress: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Encode the whole corpus with the passage encoder (eval mode).

        Returns:
            memory (N, M, H) and retrieval vectors (N, R, D), on CPU.
        """
        if self.corpus is None:
            raise RuntimeError("no corpus attached: call attach_corpus(corpus) or fit with a datamodule")
        batch_size = batch_size or self.encode_batch_size
        texts = self.corpus.texts()
        memories, retrievals = [], []
        with (
            eval_mode(self.compressor),
            progress_bar("encoding corpus", total=len(texts), enabled=show_progress) as advance,
        ):
            for start in range(0, len(texts), batch_size):
                out = self.compressor(texts[start : start + batch_size])
                memories.append(out.memory.float().cpu())
                retrievals.append(out.retrieval.float().cpu())
                advance(len(texts[start : start + batch_size]))
        return torch.cat(memories), torch.cat(retrievals)

    def build_index(self, show_progress: bool = True) -> PassageIndex:
        """(Re)build the flat index over the corpus and cache the corpus memory."""
        memory, retrieval = self.encode_corpus(show_progress=show_progress)
        step = self._current_step()
        vectors = index_vectors(retrieval, self.similarity)  # (N, D')
        if getattr(self, "index_backend", "faiss") == "kernel":  # exact search via joint_rag.kernels
            self.index = PassageIndex.build(vectors, self.corpus.ids, step=step, backend="torch")
        else:
            self.index = PassageIndex.build(vectors, self.corpus.ids, step=step)
        self._corpus_memory = memory  # (N, M, H)
        self._corpus_retrieval = retrieval  # (N, R, D)
        return self.index

    def ensure_index(self) -> None:
        if self.candidate_source == "index" and self.index is None:
            self.build_index()

    # ------------------------------------------------------------------ candidates
    @torch.no_grad()
    def search(
        self, queries: list[str], instructions: list[str | None] | None, k: int
    ) -> tuple[Tensor, list[list[str]]]:
        """Top-k passages from the index for each query: (scores (B, k), ids)."""
        self.ensure_index()
        q = query_index_vectors(self.encode_queries(queries, instructions), self.similarity).float().cpu()
        scores, rows = self.index.search(q, k)
        return scores, [[self.index.passage_ids[r] for r in row] for row in rows.tolist()]

    @torch.no_grad()
    def instruction_following(self, pairs: list, batch_size: int = 64) -> dict:
        """p-MRR (FollowIR) of the retriever on instruction pairs: the whole corpus is ranked by
        the index for each query under its original and its changed instruction
        (``joint_rag.instructions.evaluate_instruction_following``)."""
        from joint_rag.instructions import evaluate_instruction_following

        n = len(self.corpus)

        def rank(queries: list[str], instructions: list[str | None]) -> list[list[str]]:
            out: list[list[str]] = []
            for i in range(0, len(queries), batch_size):
                out += self.search(queries[i : i + batch_size], instructions[i : i + batch_size], n)[1]
            return out

        with eval_mode(self):
            return evaluate_instruction_following(rank, pairs)

    def training_candidates(self, batch: RAGBatch) -> list[list[str]]:
        """C candidate ids per query for a training step."""
        C = self.num_candidates
        if self.candidate_source == "example":
            cands = self._example_candidates(batch)
        else:
            with eval_mode(self.query_encoder):
                _, cands = self.search(batch.queries, batch.instructions, C)
        if self.include_gold:
            for b, row in enumerate(cands):
                golds = [g for g in batch.gold_ids[b] if g in self.corpus]
                if golds and not set(golds) & set(row):
                    row[-1] = random.choice(golds)
        return cands

    def _example_candidates(self, batch: RAGBatch) -> list[list[str]]:
        if batch.candidate_ids is None:
            raise ValueError("model.candidate_source is 'example' but the examples have no candidate lists")
        C = self.num_candidates
        out = []
        for ex_id, row in zip(batch.example_ids, batch.candidate_ids):
            if len(row) < C:
                raise ValueError(
                    f"example {ex_id!r} has {len(row)} candidates but model.num_candidates is {C}: lower C"
                )
            out.append(list(row[:C]))
        return out

    @torch.no_grad()
    def rank(
        self,
        queries: list[str],
        instructions: list[str | None] | None,
        candidate_ids: list[list[str]] | None = None,
    ) -> tuple[list[list[str]], list[list[str]]]:
        """Rankings for metrics (best first) and the C candidates for answering.

        With an index: search the whole corpus (top max(10, C)); candidates are re-scored
        exactly (so maxsim uses the true similarity). With candidate lists: score them.
        """
        C = self.num_candidates
        if self.candidate_source == "example":
            if candidate_ids is None:
                raise ValueError("candidate_source is 'example' but no candidate lists were given")
            cand = [list(row) for row in candidate_ids]
        else:
            _, cand = self.search(queries, instructions, max(10, C))
        q = self.encode_queries(queries, instructions)  # (B, R, D)
        ranked = []
        for b, row in enumerate(cand):
            p = self._retrieval_for(row)  # (n, R, D)
            s = score_candidates(q[b : b + 1], p.unsqueeze(0), self.similarity)[0]  # (n,)
            order = torch.argsort(s, descending=True, stable=True).tolist()
            ranked.append([row[i] for i in order])
        return ranked, [r[:C] for r in ranked]

    def _retrieval_for(self, ids: list[str]) -> Tensor:
        """(n, R, D) retrieval vectors, from the cache built with the index when present."""
        cache = getattr(self, "_corpus_retrieval", None)
        if cache is not None and self.index is not None:
            rows = torch.tensor([self.corpus.index_of(p) for p in ids])
            return cache[rows].to(self.device)
        return self.compressor([self.corpus[self.corpus.index_of(p)].full_text() for p in ids]).retrieval

    def _memory_for(self, ids: list[str]) -> Tensor:
        """(n, M, H) memory of passages, from the cache built with the index when present."""
        if self._corpus_memory is not None and self.index is not None:
            rows = torch.tensor([self.corpus.index_of(p) for p in ids])
            return self._corpus_memory[rows].to(self.device)
        return self.compressor([self.corpus[self.corpus.index_of(p)].full_text() for p in ids]).memory

    @torch.no_grad()
    def answer_from_candidates(
        self, queries: list[str], instructions: list[str | None] | None, ranked: list[list[str]]
    ) -> list[str]:
        """Greedy answers reading the top-K of each ranked candidate list."""
        K = self.selector.k
        selected = [row[:K] for row in ranked]
        if self.generator.mode == "memory":
            memory = torch.stack([self._memory_for(row) for row in selected])  # (B, K, M, H)
            return self.generator.generate(queries, memory=memory, instructions=instructions)
        texts = [[self.corpus[self.corpus.index_of(p)].full_text() for p in row] for row in selected]
        return self.generator.generate(queries, passages=texts, instructions=instructions)
