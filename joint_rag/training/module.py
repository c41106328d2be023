"""JointRAGModule: the LightningModule that trains a ``RAGSystem``'s retriever and generator together.

It builds one ``joint_rag.system.RAGSystem`` from the parts it receives (so experiments swap
compressor, generator, selector and objectives with ``class_path``/``init_args``) and runs only
the training loop around it. One training step:

    candidates (B, C) from the (possibly stale) index or per-example lists   [system.search]
    -> compressor re-encodes the unique candidates in the graph: memory (U, M, H)
    -> query encoder: query vectors (B, R, D)                                [system.encode_queries]
    -> scores (B, C) = kernels.similarity -> straight-through top-K -> selected memory (B, K, M, H)
    -> generator answer NLL (+ per-passage signals when an objective needs them)
    -> weighted objectives
"""

from __future__ import annotations

import math
import random
import warnings

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from joint_rag.data.collate import RAGBatch
from joint_rag.data.hard_negatives import contains_answer
from joint_rag.instructions import family_p_mrr, pair_records
from joint_rag.kernels import similarity as score
from joint_rag.losses.base import Objective, ObjectiveInputs
from joint_rag.losses.end_to_end import EndToEnd
from joint_rag.losses.objective import CombinedObjective
from joint_rag.losses.pretraining import CompressorPretraining
from joint_rag.models.compressor import Compressor
from joint_rag.models.generator import Generator
from joint_rag.models.selection import TopKSelector
from joint_rag.retrieval.index import PassageIndex
from joint_rag.retrieval.sharded import world
from joint_rag.system import RAGSystem, eval_mode, with_instructions
from joint_rag.training import index_cache
from joint_rag.training.guard import divergence_error, few, nonfinite
from joint_rag.training.metrics import AnswerMetrics, RetrievalMetrics, answer_scores, f1_score
from joint_rag.training.modes import train_trainable_parts
from joint_rag.training.reader_cache import ReaderCache
from joint_rag.training.state import restore_system_state, rng_state, set_rng_state, system_state

#: what an objective may need that reads the generator (and so the passages' memory)
READS_GENERATOR = frozenset({"answer_nll", "token_logprobs", "passage_loglik", "set_reward"})

#: the checkpoint key of what ``training/state.py`` describes (RNG states, index, corpus memory)
CHECKPOINT_KEY = "joint_rag"


class JointRAGModule(pl.LightningModule):
    """Joint retriever + generator training of a ``RAGSystem``.

    Args:
        compressor: passage compressor (its projector is sized to the generator).
        generator: the answering LM.
        objectives: named objectives (default: end-to-end answer NLL only).
        objective_weights: weight per objective name (default 1.0 each).
        selector: differentiable top-k (K and its temperature).
        similarity: "flat_cosine", "maxsim", "dot" or "cosine" (``joint_rag.kernels``).
        num_candidates: C, candidates per query re-encoded in the graph.
        query_encoder: "separate" (own weights, initialised from the compressor) or "shared".
        freeze_passage_encoder: passage-side backbone and memory tokens do not train
            (query-side training); the projector still trains.
        freeze_query_encoder: the query encoder does not train. With both sides frozen the
            retrieval scores are detached, so nothing trains through retrieval (the projector
            then trains only through the generator's memory).
        candidate_source: "index" (search the corpus index) or "example" (per-example lists).
        include_gold: in training, put a gold passage among the candidates when the index
            missed it (never in evaluation).
        relevance_labels: false: label-free training. No objective sees a gold passage id:
            ``gold``/``inbatch_gold`` reach the objectives all False, no gold passage is put
            among the candidates (``include_gold`` is ignored), and objectives that read labels
            (``Objective.reads_labels``: Similarity(positives="gold"), Reinforce(reward="ndcg"))
            and compressor pretraining (it answers from the gold passage) are refused.
            Evaluation still scores against the gold ids. Per-example candidate lists
            (``candidate_source: example``) are used as the data gives them.
        lr: learning rate of generator and projector (and of ``memory_readout="pool"``'s
            pooling queries, new parameters like the projector).
        lr_retriever: learning rate of compressor backbone, memory tokens and query encoder
            (None: same as lr).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        encode_batch_size: batch size when encoding the corpus for the index.
        eval_generate: generate answers in validation/test (EM/F1).
        index_backend: "exact" (``joint_rag.kernels.similarity_topk``: the Triton kernel on
            CUDA, chunked torch on the CPU; every similarity exactly), or a faiss type (faiss-GPU
            on CUDA when installed; not for maxsim): "faiss" (flat), "faiss_ivf", "faiss_ivfpq",
            "faiss_hnsw" (approximate).
        pretrain_steps: run compressor pretraining (CLaRa stage 1: answer from the gold
            passage's memory, ``pretrain_objective``) for the first this-many steps, then the
            joint objectives (stage 3) in the same fit. The index is rebuilt at the switch.
        pretrain_objective: objective of the pretraining phase (default
            CompressorPretraining(task="answer")).
        recall_at: cut-offs of ``val/recall@k`` (and ``test/``).
        mrr_at: cut-off of ``val/mrr@k``.
        ndcg_at: cut-off of ``val/ndcg@k``.
        all_gold_at: cut-offs of ``val/all_gold@k``: the fraction of questions with every gold
            passage in the top k (multi-passage questions; equals recall@k for one gold passage).
        index_params: parameters of a faiss index type (``retrieval/faiss_types.py``: nlist,
            nprobe, pq_m, pq_bits, hnsw_m, ef_search, ef_construction, train_size, use_gpu, seed);
            unset ones are chosen from the corpus size.
        cache_corpus_memory: keep the corpus memory built with each index for answering
            (``RAGSystem``); turn off for large corpora.
        shard_index: under DDP each rank encodes and holds 1/W of the corpus, searches are
            collective (``retrieval/sharded.py``); false: every rank holds the whole index.
        reader_cache: path of an SQLite file caching the frozen text-mode generator's answer
            log-probabilities per prompt (``training/reader_cache.py``): the per-passage
            signals and Reinforce's "loglik" reward are read from it, so the seeds and
            objectives of a grid read each (question, passage) once. None: no cache. Refused
            unless the generator is frozen and reads text.
        index_cache: a folder caching the corpus's retrieval vectors when they cannot change
            (``training/index_cache.py``: the passage encoder frozen, a ``mean_pool`` or
            ``last_token`` vector, no corpus memory needed): the runs of a query-side grid
            encode the corpus once. Keyed by corpus, weights, precision and device, so a hit is
            exact. None: no cache.

    Set by ``IndexRefresh(mode="rerank")``: ``rerank_depth`` (C' > C): training candidates are
    the best C of the stale index's top C' by the current encoders.
    """

    def __init__(
        self,
        compressor: Compressor,
        generator: Generator,
        objectives: dict[str, Objective] | None = None,
        objective_weights: dict[str, float] | None = None,
        selector: TopKSelector | None = None,
        similarity: str = "flat_cosine",
        num_candidates: int = 8,
        query_encoder: str = "separate",
        freeze_passage_encoder: bool = False,
        freeze_query_encoder: bool = False,
        candidate_source: str = "index",
        include_gold: bool = True,
        relevance_labels: bool = True,
        lr: float = 1e-4,
        lr_retriever: float | None = None,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        encode_batch_size: int = 64,
        eval_generate: bool = True,
        index_backend: str = "exact",
        pretrain_steps: int = 0,
        pretrain_objective: Objective | None = None,
        recall_at: tuple[int, ...] = (1, 5),
        mrr_at: int = 10,
        ndcg_at: int = 10,
        all_gold_at: tuple[int, ...] = (),
        index_params: dict | None = None,
        cache_corpus_memory: bool = True,
        shard_index: bool = True,
        reader_cache: str | None = None,
        index_cache: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["compressor", "generator", "objectives", "selector", "pretrain_objective"]
        )
        if candidate_source not in ("index", "example"):
            raise ValueError(f"model.candidate_source must be 'index' or 'example', got {candidate_source!r}")
        if query_encoder == "shared" and freeze_passage_encoder != freeze_query_encoder:
            raise ValueError("query_encoder: shared cannot freeze one side only; use query_encoder: separate")
        self.system = RAGSystem(
            compressor,
            generator,
            selector,
            similarity=similarity,
            num_candidates=num_candidates,
            query_encoder=query_encoder,
            index_backend=index_backend,
            encode_batch_size=encode_batch_size,
            index_params=index_params,
            cache_corpus_memory=cache_corpus_memory,
            shard_index=shard_index,
        )
        self.rerank_depth: int | None = None
        self.index_restored = False  # the index came from a checkpoint (IndexRefresh keeps it)
        self._rng_to_restore: dict | None = None
        self.passage_encoder_frozen = freeze_passage_encoder
        if freeze_passage_encoder:
            for p in self._passage_encoder_params():
                p.requires_grad_(False)
        # both sides frozen: the retrieval scores carry no gradient, so nothing on the retrieval
        # path trains (with retrieval="memory" the projector also makes the retrieval vectors)
        self.retriever_frozen = freeze_passage_encoder and (freeze_query_encoder or query_encoder == "shared")
        if freeze_query_encoder and query_encoder == "separate":
            for name, p in self.system.query_encoder.named_parameters():
                if not name.startswith("projector."):
                    p.requires_grad_(False)
        self.objective = CombinedObjective(objectives or {"end_to_end": EndToEnd()}, objective_weights)
        blind = self.objective.answer_to_retriever
        if blind and generator.mode == "text" and not self.retriever_frozen:
            warnings.warn(
                f"objectives {blind}: the generator reads the selected passages as text (generator.mode: "
                "text), so their answer loss cannot reach the retrieval scores (the top-k weights only "
                "multiply memory vectors): they train the generator side only. For a usefulness signal "
                "from a text reader use LMSupervisedRetrieval, PerplexityDistillation, EMDR2, RAGSequence, "
                "RAGToken or Reinforce; for the end-to-end gradient use generator.mode: memory.",
                stacklevel=2,
            )
        self.pretrain_steps = pretrain_steps
        self.pretrain_objective = CombinedObjective(
            {"pretrain": pretrain_objective or CompressorPretraining(task="answer")}
        )
        self.candidate_source = candidate_source
        self.include_gold = include_gold
        self.relevance_labels = relevance_labels
        if reader_cache is not None:
            ReaderCache.check_reader(generator)
        self.reader_cache_path = reader_cache
        self.index_cache = index_cache
        if not relevance_labels:
            readers = self.objective.label_readers
            if readers:
                raise ValueError(
                    f"model.relevance_labels is false but objectives {readers} read the gold passage ids; "
                    "use Similarity(positives='reference_top1' or 'answer_match'), a usefulness objective, "
                    "or Reinforce with reward 'loglik' or 'f1'"
                )
            if pretrain_steps:
                raise ValueError(
                    "model.relevance_labels is false but model.pretrain_steps > 0: compressor pretraining "
                    "answers from the gold passage; set pretrain_steps: 0"
                )
        cutoffs = dict(
            recall_ks=tuple(recall_at), mrr_k=mrr_at, ndcg_k=ndcg_at, all_gold_ks=tuple(all_gold_at)
        )
        self.val_retrieval = RetrievalMetrics(**cutoffs)
        self.val_answers = AnswerMetrics()
        self.test_retrieval = RetrievalMetrics(**cutoffs)
        self.test_answers = AnswerMetrics()
        self.rank_depth = max(10, num_candidates, *recall_at, mrr_at, ndcg_at, *all_gold_at)
        #: set to a list to record, per evaluated question, ``{"id": example id, metric: value}``
        #: (retrieval metrics of a question with gold passages, em/f1 when generating); the
        #: logged metrics do not change. ``jrag ablate`` sets it before ``trainer.validate``
        #: (paired statistics). Under DDP each rank records only its own questions.
        self.question_records: list[dict] | None = None

    # ------------------------------------------------------------------ parts
    def _passage_encoder_params(self) -> list[nn.Parameter]:
        comp = self.system.compressor
        return [comp.memory_tokens, *comp.backbone.parameters()]

    def train(self, mode: bool = True) -> JointRAGModule:
        """Train mode for the parts with trainable parameters, eval mode for frozen ones
        (a frozen retriever gets no dropout noise); ``train(False)`` is plain eval."""
        super().train(mode)
        if mode:
            train_trainable_parts(self)
        return self

    def on_fit_start(self) -> None:
        # Hugging Face parts load in eval mode and Lightning keeps modes as it finds them
        self.train()

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.system.corpus is None and dm is not None:
            self.system.attach_corpus(dm.corpus)
        if stage == "fit" and self.system.compressor.center and self.system.corpus is not None:
            self.center_projector()

    def center_projector(self, sample: int = 512) -> None:
        """Start the projector's slot offsets at minus the mean memory of ``sample`` corpus
        passages (seeded choice; ``compressor.center_projector``). Runs in ``setup``, before a
        resumed run restores its checkpoint, so a resume keeps the trained offsets."""
        texts = self.system.corpus.texts()
        rows = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0))[:sample]
        spread = self.system.compressor.center_projector([texts[i] for i in rows.tolist()])
        rank_zero_info(
            f"[center_projector] {len(rows)} passages: mean pairwise cosine of the memory vectors "
            f"{spread[0]:.3f} -> {spread[1]:.3f}"
        )

    def build_index(self, show_progress: bool = True) -> None:
        """Rebuild the system's index, tagged with the current global step (for staleness)."""
        step = int(self.trainer.global_step) if self._trainer is not None else 0
        bad = self._nonfinite()
        if bad:  # not an index problem: say what it is before encoding garbage
            self._diverged(f"the weights {few(bad)} are non-finite, so the index cannot be built")
        key = self._index_cache_key()
        vectors = None
        if key:  # the encoder's own (N, R, D) vectors, whatever an index keeps of them
            vectors = index_cache.load_vectors(self.index_cache, key, len(self.system.corpus))
            if vectors is None:
                _, vectors = self.system.encode_corpus(show_progress=show_progress, need_memory=False)
                index_cache.save_vectors(self.index_cache, key, vectors)
            else:
                path = index_cache.cache_file(self.index_cache, key)
                rank_zero_info(f"[index_cache] corpus vectors read from {path}")
        self.system.build_index(step=step, show_progress=show_progress, vectors=vectors)

    def _index_cache_key(self) -> str | None:
        """The ``index_cache`` key of the corpus vectors, or None when the cache is off or the
        vectors could change (a trainable passage encoder, a memory-token retrieval vector, a
        sharded index or one that also encodes the corpus memory)."""
        system = self.system
        if (
            self.index_cache is None
            or not self._passage_vectors_fixed()
            or system.corpus is None
            or system.index_needs_memory()
            or (system.shard_index and world()[1] > 1)
        ):
            return None
        return index_cache.cache_key(
            system.compressor, system.corpus, system.device, system.encode_batch_size
        )

    # ------------------------------------------------------------------ training
    @property
    def in_pretraining(self) -> bool:
        """True while the compressor-pretraining phase (stage 1) runs."""
        return self._trainer is not None and self.global_step < self.pretrain_steps

    def training_step(self, batch: RAGBatch, batch_idx: int) -> Tensor:
        self.system.selector.set_step(self.global_step - self.pretrain_steps)
        objective = self.pretrain_objective if self.in_pretraining else self.objective
        needs = objective.needs
        B = len(batch)
        if needs and needs <= {"pretrain"}:
            inputs = self._pretrain_inputs(batch)
        else:
            inputs = self._joint_inputs(batch, needs, detach_selection=not objective.answer_trains_retriever)
        total, terms = objective(inputs)
        if not bool(torch.isfinite(total)):
            self._diverged(f"non-finite loss {float(total.detach())}", terms)
        self.log("train/loss", total, prog_bar=True, batch_size=B)
        cache = self.__dict__.get("_reader_cache")
        if cache is not None:  # cumulative rows read from the cache / computed, this process
            self.log("train/reader_cache_hits", float(cache.hits), batch_size=B)
            self.log("train/reader_cache_misses", float(cache.misses), batch_size=B)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=B)
        index = self.system.index
        if index is not None and not self.in_pretraining:
            # the oldest row of the index; row_age_* (logged with the candidates) are the rows used
            self.log("train/staleness", float(self.global_step - index.step), batch_size=B)
        return total

    def candidate_ids(
        self, queries: list[str], instructions: list[str | None] | None
    ) -> tuple[list[list[str]], Tensor]:
        """C candidate ids per query from the index (the rerank mode: the best C of the top C'
        by the current encoders) and the index rows the search returned (B, C or C')."""
        C = self.system.num_candidates
        depth = max(C, self.rerank_depth or 0)
        _, rows = self.system.search_rows(queries, instructions, depth)
        ids = self.system.index.passage_ids
        cands = [[ids[r] for r in row] for row in rows.tolist()]
        if self.rerank_depth:
            cands = self.system.rerank(queries, instructions, cands, C)
        return cands, rows

    def training_candidates(self, batch: RAGBatch) -> list[list[str]]:
        """C candidate ids per query for a training step (a gold one put in when missed)."""
        corpus = self.system.corpus
        if self.candidate_source == "example":
            cands = self._example_candidates(batch)
        else:
            if self.system.index is None:
                self.build_index()
            cands, rows = self.candidate_ids(batch.queries, batch.instructions)
            if self._trainer is not None and not self.in_pretraining:
                ages = self.system.index.ages(rows, self.global_step)
                self.log("train/row_age_mean", ages.mean(), batch_size=len(batch))
                self.log("train/row_age_max", ages.max(), batch_size=len(batch))
        if self.include_gold and self.relevance_labels:
            for b, row in enumerate(cands):
                golds = [g for g in batch.gold_ids[b] if g in corpus]
                if golds and not set(golds) & set(row):
                    row[-1] = random.choice(golds)
        return cands

    def _example_candidates(self, batch: RAGBatch) -> list[list[str]]:
        if batch.candidate_ids is None:
            raise ValueError("model.candidate_source is 'example' but the examples have no candidate lists")
        C = self.system.num_candidates
        out = []
        for ex_id, row in zip(batch.example_ids, batch.candidate_ids):
            if len(row) < C:
                raise ValueError(
                    f"example {ex_id!r} has {len(row)} candidates but model.num_candidates is {C}: lower C"
                )
            out.append(list(row[:C]))
        return out

    def _index_passage_vectors(self, ids: list[str]) -> Tensor | None:
        """(U, R, D) retrieval vectors of passages read from the index, or None when they
        could differ from encoding them now. They cannot when the passage encoder is frozen
        (eval mode, no dropout) and its retrieval vector is the plain backbone's (``mean_pool``
        or ``last_token``: memory tokens and projector play no part), and the index holds the
        whole corpus (not sharded). Query-side training (Atlas's answer to re-indexing) then
        encodes no passage at all during training."""
        if not self._index_vectors_fixed():
            return None
        index = self.system.index
        return index.vectors[self.system.rows_of(ids).to(index.vectors.device)].to(self.device)

    def _passage_vectors_fixed(self) -> bool:
        """A passage's retrieval vector cannot change in training: the passage encoder is
        frozen and the vector is the plain backbone's (``mean_pool`` or ``last_token``)."""
        plain = self.system.compressor.retrieval_mode in ("mean_pool", "last_token")
        return self.passage_encoder_frozen and plain

    def _index_vectors_fixed(self) -> bool:
        """The index's vectors are what encoding the corpus now would give (see
        ``_index_passage_vectors``)."""
        system, index = self.system, self.system.index
        whole = (
            isinstance(index, PassageIndex) and system.corpus is not None and len(index) == len(system.corpus)
        )
        return self._passage_vectors_fixed() and whole

    def index_is_current(self) -> bool:
        """Rebuilding the index would change nothing: its vectors are fixed and it keeps no
        corpus memory (the projector may train, so a cached memory would go stale)."""
        return self._index_vectors_fixed() and self.system.corpus_memory is None

    def _joint_inputs(
        self, batch: RAGBatch, needs: frozenset[str], detach_selection: bool = False
    ) -> ObjectiveInputs:
        system = self.system
        B = len(batch)
        cand_ids = self.training_candidates(batch)  # B lists of C ids
        unique = sorted({pid for row in cand_ids for pid in row})
        col = {pid: i for i, pid in enumerate(unique)}
        cand_rows = torch.tensor([[col[p] for p in row] for row in cand_ids], device=self.device)  # (B, C)
        # the generator-side memory only when an objective reads the generator (similarity
        # alone needs the retrieval vectors: half the passage encoding under mean pooling)
        need_memory = system.generator.mode == "memory" and bool(needs & READS_GENERATOR)
        fixed = None if need_memory else self._index_passage_vectors(unique)
        if fixed is not None:  # a frozen plain passage encoder: its vectors are the index's
            memory, p_ret = None, fixed
        else:
            out = system.compressor(system.texts_of(unique), need_memory=need_memory)
            memory, p_ret = out.memory, out.retrieval  # (U, M, H) or None, (U, R, D)
        q_ret = system.encode_queries(batch.queries, batch.instructions)  # (B, R, D)
        scores = score(q_ret, p_ret[cand_rows], system.similarity)  # (B, C)
        # label-free: the objectives see no gold passage (evaluation still does)
        gold_sets = [set(g) if self.relevance_labels else set() for g in batch.gold_ids]
        gold = torch.tensor(
            [[p in gold_sets[b] for p in row] for b, row in enumerate(cand_ids)], device=self.device
        )
        inbatch = score(q_ret, p_ret, system.similarity)  # (B, U)
        if self.retriever_frozen:
            scores, inbatch = scores.detach(), inbatch.detach()
        inbatch_gold = torch.tensor(
            [[p in gold_sets[b] for p in unique] for b in range(B)], device=self.device
        )
        inputs = ObjectiveInputs(
            scores=scores, gold=gold, inbatch_scores=inbatch, inbatch_gold=inbatch_gold, cand_cols=cand_rows
        )
        inputs.top_k = system.selector.k
        if "retrieval_vectors" in needs:  # losses/uniformity.py
            inputs.query_vectors, inputs.passage_vectors = q_ret, p_ret
        if "answer_match" in needs:  # distant supervision: candidates containing an answer string
            texts = dict(zip(unique, system.texts_of(unique)))
            inputs.answer_match = torch.tensor(
                [
                    [contains_answer(texts[p], batch.all_answers[b]) for p in row]
                    for b, row in enumerate(cand_ids)
                ],
                device=self.device,
            )
        cand_memory = memory[cand_rows] if memory is not None else None  # (B, C, M, H)
        if "set_reward" in needs:  # objectives that sample their own K-sets (losses/reinforce.py)
            inputs.set_reward = lambda samples, metric: self._set_reward(
                batch, cand_ids, cand_memory, samples, metric
            )
        if "reference_scores" in needs:
            inputs.reference_scores = self._reference_scores(batch, unique, cand_rows)
        if "answer_nll" in needs or needs & {"passage_loglik", "token_logprobs"}:
            # (B, K, C), (B, K); detached: the answer loss does not train the retrieval scores
            weights, selected = system.selector(scores.detach() if detach_selection else scores)
            inputs.selected = selected
        if "answer_nll" in needs:
            if system.generator.mode == "memory":
                sel_memory = torch.einsum("bkc,bcmh->bkmh", weights, cand_memory)  # (B, K, M, H)
                gen = system.generator(
                    batch.queries, batch.answers, memory=sel_memory, instructions=batch.instructions
                )
            else:
                gen = system.generator(
                    batch.queries,
                    batch.answers,
                    passages=self._selected_texts(cand_ids, selected),
                    instructions=batch.instructions,
                )
            inputs.answer_nll = gen.nll
        if needs & {"passage_loglik", "token_logprobs"}:
            K = selected.shape[1]
            per = self._per_passage(batch, cand_ids, cand_memory, selected)
            T = per.token_logprobs.shape[-1]
            inputs.token_logprobs = per.token_logprobs.view(B, K, T)  # (B, K, T)
            inputs.token_mask = per.token_mask.view(B, K, T)[:, 0]  # (B, T)
            inputs.passage_loglik = per.token_logprobs.sum(-1).view(B, K)  # (B, K)
        return inputs

    @torch.no_grad()
    def _set_reward(
        self, batch: RAGBatch, cand_ids, cand_memory: Tensor | None, samples: Tensor, metric: str
    ) -> Tensor:
        """(B, G, K) sampled candidate indices -> (B, G) rewards of the generator reading each
        sampled set: one generator call over B*G rows, in eval mode, without gradient.
        "loglik": -answer NLL (mean per answer token); "f1": token F1 of the greedy answer
        against the example's answers."""
        generator = self.system.generator
        B, G, K = samples.shape
        rep = lambda xs: [x for x in xs for _ in range(G)]  # noqa: E731
        if generator.mode == "memory":
            rows = torch.arange(B, device=samples.device)[:, None, None]
            reading = {"memory": cand_memory.detach()[rows, samples].flatten(0, 1)}  # (B*G, K, M, H)
        else:
            reading = {
                "passages": [
                    self.system.texts_of([cand_ids[b][c] for c in row])
                    for b in range(B)
                    for row in samples[b].tolist()
                ]
            }
        queries, instructions = rep(batch.queries), rep(batch.instructions)
        cache = self._reader()
        with eval_mode(generator):
            if metric == "loglik" and cache is not None:
                reward = -cache.read(
                    generator, queries, rep(batch.answers), reading["passages"], instructions
                ).nll
            elif metric == "loglik":
                gen = generator(queries, rep(batch.answers), instructions=instructions, **reading)
                reward = -gen.nll  # (B*G,)
            elif metric == "f1":
                preds = generator.generate(queries, instructions=instructions, **reading)
                scores = [f1_score(p, a) for p, a in zip(preds, rep(batch.all_answers))]
                reward = torch.tensor(scores, device=samples.device)
            else:
                raise ValueError(f"set_reward metric must be 'loglik' or 'f1', got {metric!r}")
        return reward.float().view(B, G)

    def _kl_reference(self) -> nn.ModuleDict:
        """The frozen reference retriever of ``reference_scores``: a snapshot of the passage and
        query encoders taken the first time it is needed (the retriever as the joint phase
        starts), restored from a checkpoint when resuming. Kept out of the state dict and the
        optimiser."""
        ref = self.__dict__.get("_kl_reference_parts")
        if ref is None:
            system = self.system
            passages = system.compressor.copy_for_queries()
            queries = passages if system.shares_query_encoder else system.query_encoder.copy_for_queries()
            ref = nn.ModuleDict({"compressor": passages, "query_encoder": queries})
            state = self.__dict__.pop("_kl_reference_state", None)
            if state is not None:
                ref.load_state_dict(state)
            ref.requires_grad_(False)
            ref.to(self.device)
            self.__dict__["_kl_reference_parts"] = ref
        return ref

    @torch.no_grad()
    def _reference_scores(self, batch: RAGBatch, unique: list[str], cand_rows: Tensor) -> Tensor:
        """(B, C) scores of the frozen reference retriever (``_kl_reference``, eval mode) for the
        step's candidates."""
        ref = self._kl_reference()
        passages, queries = ref["compressor"], ref["query_encoder"]
        with eval_mode(ref):
            p_ret = passages(self.system.texts_of(unique), need_memory=False).retrieval  # (U, R, D)
            q_ret = queries(with_instructions(batch.queries, batch.instructions), need_memory=False).retrieval
        return score(q_ret, p_ret[cand_rows], self.system.similarity)  # (B, C)

    def _reader(self) -> ReaderCache | None:
        """The ``reader_cache`` file, opened on first use (None when not configured)."""
        if self.reader_cache_path is None:
            return None
        cache = self.__dict__.get("_reader_cache")
        if cache is None:
            cache = self.__dict__["_reader_cache"] = ReaderCache(self.reader_cache_path)
        return cache

    def _selected_texts(self, cand_ids: list[list[str]], selected: Tensor) -> list[list[str]]:
        return [
            self.system.texts_of([cand_ids[b][c] for c in row]) for b, row in enumerate(selected.tolist())
        ]

    def _per_passage(self, batch: RAGBatch, cand_ids, cand_memory: Tensor, selected: Tensor):
        """Generator output given each selected passage alone: B*K rows, (b, k) order."""
        generator = self.system.generator
        B, K = selected.shape
        rep = lambda xs: [x for x in xs for _ in range(K)]  # noqa: E731
        if generator.mode == "memory":
            idx = selected[..., None, None].expand(-1, -1, *cand_memory.shape[2:])  # (B, K, M, H)
            single = cand_memory.gather(1, idx).flatten(0, 1).unsqueeze(1)  # (B*K, 1, M, H)
            return generator(
                rep(batch.queries), rep(batch.answers), memory=single, instructions=rep(batch.instructions)
            )
        texts = [[t] for row in self._selected_texts(cand_ids, selected) for t in row]
        cache = self._reader()
        if cache is not None:
            return cache.read(
                generator, rep(batch.queries), rep(batch.answers), texts, rep(batch.instructions)
            )
        return generator(
            rep(batch.queries), rep(batch.answers), passages=texts, instructions=rep(batch.instructions)
        )

    def _pretrain_inputs(self, batch: RAGBatch) -> ObjectiveInputs:
        """Stage 1: answer from the first gold passage's memory; memory-mean vs token-mean MSE."""
        compressor, generator = self.system.compressor, self.system.generator
        texts = self.system.texts_of([g[0] for g in batch.gold_ids])
        out = compressor(texts)
        gen = generator(
            batch.queries, batch.answers, memory=out.memory.unsqueeze(1), instructions=batch.instructions
        )
        tok = generator.tokenizer(
            texts,
            add_special_tokens=False,
            padding=True,
            truncation=True,
            max_length=compressor.max_length,
            return_tensors="pt",
        )
        ids, mask = tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device).bool()
        with torch.no_grad():
            token_embeds = generator.model.get_input_embeddings()(ids)  # (B, L, H)
        B = len(batch)
        zeros = torch.zeros(B, 1, device=self.device)
        return ObjectiveInputs(
            scores=zeros,
            gold=torch.ones(B, 1, dtype=torch.bool, device=self.device),
            answer_nll=gen.nll,
            pretrain={"nll": gen.nll, "memory": out.memory, "token_embeds": token_embeds, "token_mask": mask},
        )

    # ------------------------------------------------------------------ divergence guard
    def _diverged(self, what: str, terms: dict[str, Tensor] | None = None) -> None:
        """Stop the fit: one line with the step, the loss terms and the learning rates."""
        if self._trainer is None or not self.trainer.optimizers:
            rates = "(no optimiser)"
        else:
            rates = ", ".join(f"{g['lr']:.3g}" for g in self.trainer.optimizers[0].param_groups)
        raise divergence_error(self.global_step, what, terms, rates)

    def _nonfinite(self, grads: bool = False) -> list[str]:
        """Names of trainable parameters (or their gradients) holding NaN or inf."""
        return nonfinite((n, p.grad if grads else p) for n, p in self.named_parameters() if p.requires_grad)

    def on_before_optimizer_step(self, optimizer) -> None:
        # fp16 mixed precision: inf gradients are the loss scaler's business (it skips the step)
        if str(self._trainer.precision if self._trainer is not None else "").startswith("16"):
            return
        bad = self._nonfinite(grads=True)
        if bad:
            self._diverged(f"non-finite gradients in {few(bad)}")

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        bad = self._nonfinite()
        if bad:  # finite loss and gradients, but the update overflowed (a huge learning rate)
            self._diverged(f"the update made {few(bad)} non-finite")

    # ------------------------------------------------------------------ checkpoints (exact resume)
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Refuse non-finite weights; add the RNG states, the index and the corpus memory
        (``training/state.py``) so a resumed fit continues exactly."""
        bad = nonfinite(checkpoint.get("state_dict", {}).items())
        if bad:
            self._diverged(f"the weights {few(bad)} are non-finite (checkpoint refused)")
        extra: dict = {"rng": rng_state(), **system_state(self.system)}
        ref = self.__dict__.get("_kl_reference_parts")
        ref_state = ref.state_dict() if ref is not None else self.__dict__.get("_kl_reference_state")
        if ref_state is not None:  # Reinforce's KL reference retriever (``_kl_reference``)
            extra["kl_reference"] = {k: v.detach().cpu() for k, v in ref_state.items()}
        checkpoint[CHECKPOINT_KEY] = extra

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        extra = checkpoint.get(CHECKPOINT_KEY) or {}
        self._rng_to_restore = extra.get("rng")
        self.__dict__.pop("_kl_reference_parts", None)
        if extra.get("kl_reference") is not None:
            self.__dict__["_kl_reference_state"] = extra["kl_reference"]
        device = self.trainer.strategy.root_device if self._trainer is not None else self.device
        # another corpus: nothing restored, IndexRefresh builds a new index
        self.index_restored = restore_system_state(self.system, extra, device)

    def on_train_batch_start(self, batch: RAGBatch, batch_idx: int) -> None:
        # the generators as they were when the checkpoint was written, put back as late as
        # possible: after Lightning's restore, sanity check and the data loader's first draw
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, batch: RAGBatch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_retrieval, self.val_answers)

    def test_step(self, batch: RAGBatch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_retrieval, self.test_answers)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_retrieval, self.val_answers)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_retrieval, self.test_answers)

    def _log_eval(self, split: str, retrieval: RetrievalMetrics, answers: AnswerMetrics) -> None:
        # non-finite weights give meaningless rankings and answers: NaN, never a number
        nan = bool(self._nonfinite())
        # compute() already sums the states over ranks; sync_dist only keeps Lightning quiet
        for name, value in retrieval.compute().items():
            self.log(f"{split}/{name}", value * math.nan if nan else value, sync_dist=True)
        # questions evaluated, summed over ranks (each counted once: no sampler padding)
        self.log(f"{split}/questions", retrieval.count.float(), reduce_fx="sum", sync_dist=True)
        if self.hparams.eval_generate:
            for name, value in answers.compute().items():
                self.log(f"{split}/{name}", value * math.nan if nan else value, sync_dist=True)
        retrieval.reset()
        answers.reset()
        pairs = self._instruction_pairs()
        if pairs:
            with eval_mode(self.system):
                following = self.system.instruction_following(pairs)
            self.log(f"{split}/p_mrr", following["p_mrr"])
            for side in ("og", "new"):  # FollowIR's nDCG@10 under each instruction, where judged
                if following[f"ndcg_queries_{side}"]:
                    self.log(f"{split}/instruction_ndcg@10_{side}", following[f"ndcg@10_{side}"])
            for name, value in family_p_mrr(following, self._instruction_families()).items():
                self.log(f"{split}/{name}", value)
            if self.question_records is not None:  # per pair, for the ablation's paired intervals
                self.question_records.extend(pair_records(following, self._instruction_families()))

    def _instruction_families(self) -> tuple[str, ...]:
        dm = self.trainer.datamodule if self._trainer is not None else None
        return tuple(getattr(dm.data, "instruction_families", ())) if dm is not None else ()

    def _instruction_pairs(self) -> list:
        """The datamodule's held-out instruction pairs (``RAGData.instruction_pairs``), if any."""
        dm = self.trainer.datamodule if self._trainer is not None else None
        return list(dm.data.instruction_pairs) if dm is not None else []

    @torch.no_grad()
    def _eval_step(self, batch: RAGBatch, retrieval: RetrievalMetrics, answers: AnswerMetrics) -> None:
        if self.candidate_source == "index" and self.system.index is None:
            self.build_index()
        if self.candidate_source == "example":
            if batch.candidate_ids is None:
                raise ValueError("candidate_source is 'example' but the examples have no candidate lists")
            ranked = self.system.rank_candidates(batch.queries, batch.instructions, batch.candidate_ids)
        else:
            ranked = self.system.rank(batch.queries, batch.instructions, self.rank_depth)
        ids = [row for row, _ in ranked]
        if not ids:  # an empty batch (DDP evaluation without padding) only joined the search
            return
        retrieval.update(ids, batch.gold_grades)  # graded qrels: nDCG uses the grades
        preds = None
        if self.hparams.eval_generate:
            preds = self.system.answer(batch.queries, batch.instructions, ids)
            answers.update(preds, batch.all_answers)
        if self.question_records is not None:
            scores = answer_scores(preds, batch.all_answers) if preds is not None else [{}] * len(ids)
            for qid, row, values, answer in zip(
                batch.example_ids, ids, retrieval.per_query(ids, batch.gold_grades), scores
            ):  # top1: the passage ranked first, for error analysis (what a wrong row puts there)
                top1 = {"top1": row[0]} if row else {}
                self.question_records.append({"id": qid, **top1, **(values or {}), **answer})

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        retriever_ids = {id(p) for p in self._passage_encoder_params()}
        retriever_ids |= {
            id(p) for n, p in self.system.query_encoder.named_parameters() if not n.startswith("projector.")
        }
        for comp in {id(c): c for c in (self.system.compressor, self.system.query_encoder)}.values():
            if comp.memory_readout == "pool":  # new pooling queries: model.lr
                retriever_ids.discard(id(comp.memory_tokens))
        retriever = [p for p in self.parameters() if p.requires_grad and id(p) in retriever_ids]
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in retriever_ids]
        lr_ret = self.hparams.lr_retriever if self.hparams.lr_retriever is not None else self.hparams.lr
        groups = [
            g
            for g in ({"params": rest, "lr": self.hparams.lr}, {"params": retriever, "lr": lr_ret})
            if g["params"]
        ]
        if not groups:
            raise ValueError("nothing to train: every parameter is frozen")
        opt = torch.optim.AdamW(groups, weight_decay=self.hparams.weight_decay)
        warm = max(1, self.hparams.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
