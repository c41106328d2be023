"""RAGSystem: the one object that holds a retrieval-augmented generator and does its work.

A plain ``nn.Module`` (no Lightning): the compressor (passage encoder), the query encoder, the
generator, the top-k selector (K), the similarity (``joint_rag.kernels``' vocabulary), the
number of candidates C, and, once a corpus is attached, the passage index and the corpus
memory. It encodes, searches, ranks and answers. The training module
(``joint_rag.training.module.JointRAGModule``) holds one and runs only the training loop;
``joint_rag.pipeline.JointRAG`` wraps one loaded from an export (``joint_rag.artifact``).

    system = RAGSystem(Compressor("minilm"), Generator("smollm2-135m"), TopKSelector(k=2))
    system.attach_corpus(corpus); system.build_index()
    ranked = system.rank(["Who founded Veloria?"], None, n=10)   # [(ids, scores (n,))]
    system.answer(["Who founded Veloria?"], None, [ranked[0][0]])  # greedy, from the top-K
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from joint_rag.data.types import Corpus, InstructionPair
from joint_rag.instructions import evaluate_instruction_following
from joint_rag.kernels import similarity
from joint_rag.models.compressor import Compressor
from joint_rag.models.generator import Generator
from joint_rag.models.selection import TopKSelector
from joint_rag.progress import progress_bar
from joint_rag.retrieval.index import PassageIndex, check_index_options, writable
from joint_rag.retrieval.sharded import ShardedIndex, shard_range, world

QUERY_ENCODERS = ("separate", "shared")


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` in eval mode, then give every submodule back its own previous mode.

    ``module.train(was_training)`` would instead put *all* submodules in one mode, e.g. a frozen
    backbone inside a trainable wrapper into train mode.
    """
    saved = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in saved:
            m.training = mode


def with_instructions(queries: list[str], instructions: list[str | None] | None) -> list[str]:
    """The texts the query encoder reads: the instruction, when given, before the query."""
    return [f"{i} {q}" if i else q for q, i in zip(queries, instructions or [None] * len(queries))]


class RAGSystem(nn.Module):
    """Compressor, query encoder, generator, selector, similarity and index.

    Args:
        compressor: the passage encoder (its projector is sized to the generator here).
        generator: the answering LM.
        selector: differentiable top-k (K and its temperature); default ``TopKSelector()``.
        similarity: "flat_cosine", "maxsim", "dot" or "cosine" (``joint_rag.kernels``).
        num_candidates: C, candidates per query the generator's top-K is chosen from.
        query_encoder: "separate" (own weights, initialised from the compressor), "shared"
            (the compressor itself), or a ``Compressor`` (a loaded separate query encoder).
            A separate query encoder uses the compressor's projector under memory retrieval
            (queries and passage memory in one space) and none under mean pooling.
        index_backend: "exact" (``joint_rag.kernels.similarity_topk``: Triton on CUDA, chunked
            torch on the CPU), or a faiss type: "faiss" (flat), "faiss_ivf", "faiss_ivfpq",
            "faiss_hnsw" (approximate; none for maxsim). See ``retrieval/faiss_types.py``.
        encode_batch_size: passages per batch when encoding the corpus.
        index_params: parameters of a faiss type (nlist, nprobe, pq_m, pq_bits, hnsw_m,
            ef_search, ef_construction, train_size, use_gpu, seed); defaults from N.
        cache_corpus_memory: keep the corpus memory (N, M, H) built with the index, so answering
            reads it instead of encoding the top-K passages again; turn off for large corpora
            (at N = 1e5, M = 32, H = 576 it is 7 GB of float32).
        shard_index: under a distributed process group of W > 1 ranks (Lightning DDP), each
            rank encodes and holds 1/W of the corpus and searches are collective
            (``retrieval/sharded.py``); false: every rank holds the whole index.
    """

    def __init__(
        self,
        compressor: Compressor,
        generator: Generator,
        selector: TopKSelector | None = None,
        similarity: str = "flat_cosine",
        num_candidates: int = 8,
        query_encoder: str | Compressor = "separate",
        index_backend: str = "exact",
        encode_batch_size: int = 64,
        index_params: dict | None = None,
        cache_corpus_memory: bool = True,
        shard_index: bool = True,
    ) -> None:
        super().__init__()
        check_index_options(index_backend, similarity, index_params)  # before any model work
        if isinstance(query_encoder, str) and query_encoder not in QUERY_ENCODERS:
            raise ValueError(f"query_encoder must be one of {QUERY_ENCODERS}, got {query_encoder!r}")
        self.selector = selector or TopKSelector()
        if self.selector.k > num_candidates:
            raise ValueError(
                f"selector.k={self.selector.k} is larger than num_candidates={num_candidates} (C): K must be <= C"
            )
        self.compressor = compressor
        self.generator = generator
        compressor.build_projector(generator.hidden_size)
        compressor.attach_generator(generator)
        if query_encoder == "shared":
            self.query_encoder = compressor
        else:
            qenc = compressor.copy_for_queries() if query_encoder == "separate" else query_encoder
            # queries need retrieval vectors only; under memory retrieval those come out of the
            # projector, which must then be the passages' (one space)
            qenc.projector = compressor.projector if compressor.retrieval_mode == "memory" else None
            self.query_encoder = qenc
        self.similarity = similarity
        self.num_candidates = num_candidates
        self.index_backend = index_backend
        self.index_params = dict(index_params or {})
        self.encode_batch_size = encode_batch_size
        self.cache_corpus_memory = cache_corpus_memory
        self.shard_index = shard_index
        self.corpus: Corpus | None = None
        self.index: PassageIndex | None = None
        self.corpus_memory: Tensor | None = None  # (N, M, H), built with the index

    @property
    def device(self) -> torch.device:
        return self.compressor.memory_tokens.device

    @property
    def shares_query_encoder(self) -> bool:
        return self.query_encoder is self.compressor

    def attach_corpus(self, corpus: Corpus) -> None:
        """Use ``corpus`` for search and answering (drops an index built over another one)."""
        if corpus is not self.corpus:
            self.corpus, self.index, self.corpus_memory = corpus, None, None

    def _corpus(self) -> Corpus:
        if self.corpus is None:
            raise RuntimeError("no corpus attached: call attach_corpus(corpus) first")
        return self.corpus

    # ------------------------------------------------------------------ encoding
    def encode_queries(self, queries: list[str], instructions: list[str | None] | None = None) -> Tensor:
        """(B, R, D) query retrieval vectors (differentiable; the instruction prepended when given)."""
        # queries need retrieval vectors only (memory retrieval still runs the memory-token pass)
        return self.query_encoder(with_instructions(queries, instructions), need_memory=False).retrieval

    @torch.no_grad()
    def encode_corpus(
        self, show_progress: bool = True, rows: list[int] | None = None, need_memory: bool | None = None
    ) -> tuple[Tensor | None, Tensor]:
        """Encode the whole corpus (or its ``rows``) with the passage encoder in eval mode.

        Returns:
            memory (N, M, H) (None for a text-mode generator or ``need_memory=False``) and
            retrieval vectors (N, R, D), on the system's device.
        """
        texts = self._corpus().texts()
        if rows is None:  # the whole corpus: say once how many passages max_length cuts
            self.compressor.warn_truncated(texts, self._corpus().source)
        else:
            texts = [texts[r] for r in rows]
        size = self.encode_batch_size
        if need_memory is None:
            need_memory = self.generator.mode == "memory"
        memories, retrievals = [], []
        with (
            eval_mode(self.compressor),
            progress_bar("encoding corpus", len(texts), show_progress) as advance,
        ):
            # longest first (as sentence-transformers does): batches of similar lengths pad little
            order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
            for start in range(0, len(texts), size):
                batch = [texts[i] for i in order[start : start + size]]
                out = self.compressor(batch, need_memory=need_memory)
                if need_memory:
                    memories.append(out.memory.float())
                retrievals.append(out.retrieval.float())
                advance(len(batch))
        back = torch.empty(len(order), dtype=torch.long)
        back[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))  # sorted -> corpus rows
        memory = torch.cat(memories)[back.to(memories[0].device)] if need_memory else None
        retrieval = torch.cat(retrievals)
        return memory, retrieval[back.to(retrieval.device)]

    def index_needs_memory(self, replace: bool = True) -> bool:
        """Whether ``build_index`` encodes the corpus memory too (a whole, unsharded index of a
        memory-mode generator that caches it)."""
        sharded = self.shard_index and world()[1] > 1
        return replace and self.cache_corpus_memory and self.generator.mode == "memory" and not sharded

    def build_index(
        self, step: int = 0, show_progress: bool = True, replace: bool = True, vectors: Tensor | None = None
    ) -> PassageIndex:
        """(Re)build the index over the corpus (vectors on the system's device) and cache the
        corpus memory. ``step`` records when (for staleness). ``replace=False`` returns a fresh
        index and keeps the current one (a staleness probe). ``vectors``: the whole corpus's
        retrieval vectors (N, R, D), already encoded (``model.index_cache``); only for an
        unsharded index that needs no corpus memory."""
        corpus = self._corpus()
        rank, world_size = world()
        sharded = self.shard_index and world_size > 1
        # a sharded index holds 1/W of the corpus memory too: answering encodes its top-K instead
        need_memory = self.index_needs_memory(replace)
        owned = shard_range(len(corpus), rank, world_size) if sharded else range(len(corpus))
        if vectors is not None:
            if sharded or need_memory or vectors.shape[0] != len(corpus):
                raise ValueError(
                    f"build_index(vectors=...) takes the whole corpus's {len(corpus)} vectors for an "
                    f"unsharded index without corpus memory; got {tuple(vectors.shape)}"
                    + (", sharded" if sharded else "")
                    + (", memory needed" if need_memory else "")
                )
            memory, retrieval = None, vectors.to(self.device)
        else:
            memory, retrieval = self.encode_corpus(
                show_progress=show_progress, rows=list(owned) if sharded else None, need_memory=need_memory
            )
        fingerprint = {"corpus": corpus.fingerprint()}
        index = PassageIndex(
            retrieval,
            list(corpus.ids)[owned.start : owned.stop],
            self.similarity,
            self.index_backend,
            step,
            fingerprint,
            self.index_params,
            show_progress,
        )
        if sharded:
            index = ShardedIndex(index, owned, list(corpus.ids))
        if replace:
            self.index, self.corpus_memory = index, memory
        return index

    def ensure_index(self) -> PassageIndex:
        return self.index if self.index is not None else self.build_index()

    @torch.no_grad()
    def refresh_rows(self, rows: list[int], step: int) -> None:
        """Re-encode the corpus rows ``rows`` with the current passage encoder and write them
        into the index (and the cached corpus memory): one slice of a rolling refresh."""
        index = self.ensure_index()
        need_memory = self.corpus_memory is not None
        memory, retrieval = self.encode_corpus(show_progress=False, rows=rows, need_memory=need_memory)
        index.update(torch.tensor(rows), retrieval.to(index.device), step)
        if need_memory:
            self.corpus_memory = writable(self.corpus_memory)
            self.corpus_memory[torch.tensor(rows, device=self.corpus_memory.device)] = memory.to(
                self.corpus_memory
            )

    # ------------------------------------------------------------------ search and rank
    @torch.no_grad()
    def search_rows(
        self, queries: list[str], instructions: list[str | None] | None, k: int
    ) -> tuple[Tensor, Tensor]:
        """The index's top-k rows per query: scores (B, k) and rows (B, k), best first."""
        index = self.ensure_index()
        if not queries:  # a rank's empty evaluation batch still joins a sharded search
            return index.search(index.vectors.new_zeros(0, *index.vectors.shape[1:]), k)
        with eval_mode(self.query_encoder):
            q = self.encode_queries(queries, instructions)  # (B, R, D)
        return index.search(q, k)

    def search(
        self, queries: list[str], instructions: list[str | None] | None, k: int
    ) -> tuple[Tensor, list[list[str]]]:
        """The index's top-k passages per query: scores (B, k) and passage ids, best first."""
        scores, rows = self.search_rows(queries, instructions, k)
        ids = self.index.passage_ids
        return scores, [[ids[r] for r in row] for row in rows.tolist()]

    @torch.no_grad()
    def rerank(
        self,
        queries: list[str],
        instructions: list[str | None] | None,
        candidate_ids: list[list[str]],
        k: int,
    ) -> list[list[str]]:
        """Each query's best ``k`` of its candidates by the current encoders: the candidates'
        passages are encoded now (each unique passage once), so stale index vectors only choose
        the pool, not the order (the ``rerank`` refresh mode)."""
        unique = sorted({p for row in candidate_ids for p in row})
        col = {p: i for i, p in enumerate(unique)}
        with eval_mode(self):
            q = self.encode_queries(queries, instructions)  # (B, R, D)
            p = torch.cat(
                [
                    self.retrieval_of(unique[i : i + self.encode_batch_size])
                    for i in range(0, len(unique), self.encode_batch_size)
                ]
            )  # (U, R, D)
        cols = torch.tensor([[col[x] for x in row] for row in candidate_ids], device=p.device)  # (B, C')
        scores = similarity(q, p[cols], self.similarity)  # (B, C')
        best = scores.topk(min(k, cols.shape[1]), dim=1).indices.tolist()  # (B, k)
        return [[row[c] for c in keep] for row, keep in zip(candidate_ids, best)]

    def rank(
        self, queries: list[str], instructions: list[str | None] | None, n: int
    ) -> list[tuple[list[str], Tensor]]:
        """The top-n of the corpus per query, best first: (passage ids, scores (n,) on CPU)."""
        scores, ids = self.search(queries, instructions, n)
        return [(row, s) for row, s in zip(ids, scores.float().cpu())]

    @torch.no_grad()
    def rank_candidates(
        self, queries: list[str], instructions: list[str | None] | None, candidate_ids: list[list[str]]
    ) -> list[tuple[list[str], Tensor]]:
        """Each query's own candidate list (per-example candidates), sorted by similarity."""
        with eval_mode(self):
            q = self.encode_queries(queries, instructions)  # (B, R, D)
            out = []
            for b, row in enumerate(candidate_ids):
                p = self.retrieval_of(row)  # (n, R', D)
                s = similarity(q[b : b + 1], p.unsqueeze(0), self.similarity)[0].float().cpu()  # (n,)
                order = torch.argsort(s, descending=True, stable=True)
                out.append(([row[i] for i in order.tolist()], s[order]))
        return out

    def rows_of(self, ids: list[str]) -> Tensor:
        corpus = self._corpus()
        return torch.tensor([corpus.index_of(p) for p in ids], device=self.device)

    def texts_of(self, ids: list[str]) -> list[str]:
        corpus = self._corpus()
        return [corpus[corpus.index_of(p)].full_text() for p in ids]

    def retrieval_of(self, ids: list[str]) -> Tensor:
        """(n, R, D) retrieval vectors of passages (encoded now: the index keeps only what it
        searches with)."""
        return self.compressor(self.texts_of(ids), need_memory=False).retrieval

    def memory_of(self, ids: list[str]) -> Tensor:
        """(n, M, H) memory of passages: from the corpus memory built with the index, else encoded."""
        if self.corpus_memory is not None:
            return self.corpus_memory[self.rows_of(ids)]
        return self.compressor(self.texts_of(ids)).memory

    # ------------------------------------------------------------------ answering
    @torch.no_grad()
    def answer(
        self, queries: list[str], instructions: list[str | None] | None, ranked: list[list[str]]
    ) -> list[str]:
        """Greedy answers, each reading the top-K passages of its ranked list."""
        K = self.selector.k
        selected = [row[:K] for row in ranked]
        with eval_mode(self):
            if self.generator.mode == "memory":
                memory = torch.stack([self.memory_of(row) for row in selected])  # (B, K, M, H)
                return self.generator.generate(queries, memory=memory, instructions=instructions)
            texts = [self.texts_of(row) for row in selected]
            return self.generator.generate(queries, passages=texts, instructions=instructions)

    @torch.no_grad()
    def instruction_following(self, pairs: list[InstructionPair], batch_size: int = 64) -> dict:
        """p-MRR (FollowIR) on instruction pairs: the whole corpus is ranked for each query under
        its original and its changed instruction (``joint_rag.instructions``)."""
        n = len(self._corpus())

        def rank(queries: list[str], instructions: list[str | None]) -> list[list[str]]:
            out: list[list[str]] = []
            for i in range(0, len(queries), batch_size):
                out += self.search(queries[i : i + batch_size], instructions[i : i + batch_size], n)[1]
            return out

        return evaluate_instruction_following(rank, pairs)
