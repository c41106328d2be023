"""JointRAGModule: the LightningModule that trains retriever and generator together.

It receives its parts (compressor, generator, objectives, selector) by dependency injection,
so experiments swap them with ``class_path``/``init_args``. One training step:

    candidates (B, C) from the (possibly stale) index or per-example lists
    -> compressor re-encodes the unique candidates in the graph: memory (U, M, H)
    -> query encoder: query vectors (B, R, D)
    -> scores (B, C) -> straight-through top-K -> selected memory (B, K, M, H)
    -> generator answer NLL (+ per-passage signals when an objective needs them)
    -> weighted objectives
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from joint_rag.data.collate import RAGBatch
from joint_rag.data.corpus import Corpus
from joint_rag.losses.base import Objective, ObjectiveInputs
from joint_rag.losses.end_to_end import EndToEnd
from joint_rag.losses.objective import CombinedObjective
from joint_rag.losses.pretraining import CompressorPretraining
from joint_rag.models.compressor import Compressor
from joint_rag.models.generator import Generator
from joint_rag.models.scoring import check_similarity
from joint_rag.models.selection import TopKSelector
from joint_rag.training.candidates import CandidateMixin
from joint_rag.training.metrics import AnswerMetrics, RetrievalMetrics
from joint_rag.training.modes import train_trainable_parts


class JointRAGModule(CandidateMixin, pl.LightningModule):
    """Joint retriever + generator training.

    Args:
        compressor: passage compressor (its projector is sized to the generator here).
        generator: the answering LM.
        objectives: named objectives (default: end-to-end answer NLL only).
        objective_weights: weight per objective name (default 1.0 each).
        selector: differentiable top-k (K and its temperature).
        similarity: "flat_cosine", "maxsim", "mean_dot" or "cosine".
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
        lr: learning rate of generator and projector.
        lr_retriever: learning rate of compressor backbone, memory tokens and query encoder
            (None: same as lr).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        encode_batch_size: batch size when encoding the corpus for the index.
        eval_generate: generate answers in validation/test (EM/F1).
        index_backend: "faiss" (flat inner-product index) or "kernel" (exact search through
            joint_rag.kernels.similarity_topk: the Triton kernel on CUDA, chunked torch on CPU).
        pretrain_steps: run compressor pretraining (CLaRa stage 1: answer from the gold
            passage's memory, ``pretrain_objective``) for the first this-many steps, then the
            joint objectives (stage 3) in the same fit. The index is rebuilt at the switch.
        pretrain_objective: objective of the pretraining phase (default
            CompressorPretraining(task="answer")).
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
        lr: float = 1e-4,
        lr_retriever: float | None = None,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        encode_batch_size: int = 64,
        eval_generate: bool = True,
        index_backend: str = "faiss",
        pretrain_steps: int = 0,
        pretrain_objective: Objective | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["compressor", "generator", "objectives", "selector", "pretrain_objective"]
        )
        check_similarity(similarity)
        if query_encoder not in ("separate", "shared"):
            raise ValueError(f"model.query_encoder must be 'separate' or 'shared', got {query_encoder!r}")
        if index_backend not in ("faiss", "kernel"):
            raise ValueError(f"model.index_backend must be 'faiss' or 'kernel', got {index_backend!r}")
        if candidate_source not in ("index", "example"):
            raise ValueError(f"model.candidate_source must be 'index' or 'example', got {candidate_source!r}")
        if query_encoder == "shared" and freeze_passage_encoder != freeze_query_encoder:
            raise ValueError("query_encoder: shared cannot freeze one side only; use query_encoder: separate")
        self.selector = selector or TopKSelector()
        if self.selector.k > num_candidates:
            raise ValueError(
                f"selector.k={self.selector.k} is larger than model.num_candidates={num_candidates} (C): K must be <= C"
            )
        self.compressor = compressor
        self.generator = generator
        compressor.build_projector(generator.hidden_size)
        compressor.attach_generator(generator)
        self.query_encoder = compressor if query_encoder == "shared" else compressor.copy_for_queries()
        if query_encoder == "separate":
            self.query_encoder.projector = None  # queries need retrieval vectors only
        if compressor.retrieval_mode == "memory" and query_encoder == "separate":
            self.query_encoder.projector = compressor.projector  # same space as passage memory
        if freeze_passage_encoder:
            for p in self._passage_encoder_params():
                p.requires_grad_(False)
        # both sides frozen: the retrieval scores carry no gradient, so nothing on the retrieval
        # path trains (with retrieval="memory" the projector also makes the retrieval vectors)
        self.retriever_frozen = freeze_passage_encoder and (freeze_query_encoder or query_encoder == "shared")
        if freeze_query_encoder and query_encoder == "separate":
            for name, p in self.query_encoder.named_parameters():
                if not name.startswith("projector."):
                    p.requires_grad_(False)
        self.objective = CombinedObjective(objectives or {"end_to_end": EndToEnd()}, objective_weights)
        self.pretrain_steps = pretrain_steps
        self.pretrain_objective = CombinedObjective(
            {"pretrain": pretrain_objective or CompressorPretraining(task="answer")}
        )
        self.similarity = similarity
        self.num_candidates = num_candidates
        self.candidate_source = candidate_source
        self.include_gold = include_gold
        self.encode_batch_size = encode_batch_size
        self.index_backend = index_backend
        self.corpus: Corpus | None = None
        self.index = None
        self._corpus_memory: Tensor | None = None  # (N, M, H) cached at index build
        self.val_retrieval = RetrievalMetrics(recall_ks=(1, 5), mrr_k=10, ndcg_k=10)
        self.val_answers = AnswerMetrics()
        self.test_retrieval = RetrievalMetrics(recall_ks=(1, 5), mrr_k=10, ndcg_k=10)
        self.test_answers = AnswerMetrics()

    # ------------------------------------------------------------------ parts
    def _passage_encoder_params(self) -> list[nn.Parameter]:
        return [self.compressor.memory_tokens, *self.compressor.backbone.parameters()]

    def attach_corpus(self, corpus: Corpus) -> None:
        self.corpus = corpus

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
        if self.corpus is None and dm is not None:
            self.attach_corpus(dm.corpus)

    # ------------------------------------------------------------------ training
    @property
    def in_pretraining(self) -> bool:
        """True while the compressor-pretraining phase (stage 1) runs."""
        return self._trainer is not None and self.global_step < self.pretrain_steps

    def training_step(self, batch: RAGBatch, batch_idx: int) -> Tensor:
        self.selector.set_step(self.global_step - self.pretrain_steps)
        objective = self.pretrain_objective if self.in_pretraining else self.objective
        needs = objective.needs
        B = len(batch)
        if needs and needs <= {"pretrain"}:
            inputs = self._pretrain_inputs(batch)
        else:
            detach = not getattr(objective, "answer_trains_retriever", True)
            inputs = self._joint_inputs(batch, needs, detach_selection=detach)
        total, terms = objective(inputs)
        self.log("train/loss", total, prog_bar=True, batch_size=B)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=B)
        if self.index is not None and not self.in_pretraining:
            self.log("train/staleness", float(self.global_step - self.index.step), batch_size=B)
        return total

    def _joint_inputs(
        self, batch: RAGBatch, needs: frozenset[str], detach_selection: bool = False
    ) -> ObjectiveInputs:
        B = len(batch)
        cand_ids = self.training_candidates(batch)  # B lists of C ids
        unique = sorted({pid for row in cand_ids for pid in row})
        col = {pid: i for i, pid in enumerate(unique)}
        cand_rows = torch.tensor([[col[p] for p in row] for row in cand_ids], device=self.device)  # (B, C)
        texts = [self.corpus[self.corpus.index_of(p)].full_text() for p in unique]
        out = self.compressor(texts, need_memory=self.generator.mode == "memory")
        memory, p_ret = out.memory, out.retrieval  # (U, M, H) or None, (U, R, D)
        q_ret = self.encode_queries(batch.queries, batch.instructions)  # (B, R, D)
        from joint_rag.models.scoring import score_all, score_candidates

        scores = score_candidates(q_ret, p_ret[cand_rows], self.similarity)  # (B, C)
        gold_sets = [set(g) for g in batch.gold_ids]
        gold = torch.tensor(
            [[p in gold_sets[b] for p in row] for b, row in enumerate(cand_ids)], device=self.device
        )
        inbatch = score_all(q_ret, p_ret, self.similarity)  # (B, U)
        if self.retriever_frozen:
            scores, inbatch = scores.detach(), inbatch.detach()
        inbatch_gold = torch.tensor(
            [[p in gold_sets[b] for p in unique] for b in range(B)], device=self.device
        )
        inputs = ObjectiveInputs(scores=scores, gold=gold, inbatch_scores=inbatch, inbatch_gold=inbatch_gold)
        cand_memory = memory[cand_rows] if memory is not None else None  # (B, C, M, H)
        if "answer_nll" in needs or needs & {"passage_loglik", "token_logprobs"}:
            # (B, K, C), (B, K); detached: the answer loss does not train the retrieval scores
            weights, selected = self.selector(scores.detach() if detach_selection else scores)
            inputs.selected = selected
        if "answer_nll" in needs:
            if self.generator.mode == "memory":
                sel_memory = torch.einsum("bkc,bcmh->bkmh", weights, cand_memory)  # (B, K, M, H)
                gen = self.generator(
                    batch.queries, batch.answers, memory=sel_memory, instructions=batch.instructions
                )
            else:
                texts = self._texts(cand_ids, selected)
                gen = self.generator(
                    batch.queries, batch.answers, passages=texts, instructions=batch.instructions
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

    def _texts(self, cand_ids: list[list[str]], selected: Tensor) -> list[list[str]]:
        return [
            [self.corpus[self.corpus.index_of(cand_ids[b][c])].full_text() for c in row]
            for b, row in enumerate(selected.tolist())
        ]

    def _per_passage(self, batch: RAGBatch, cand_ids, cand_memory: Tensor, selected: Tensor):
        """Generator output given each selected passage alone: B*K rows, (b, k) order."""
        B, K = selected.shape
        rep = lambda xs: [x for x in xs for _ in range(K)]  # noqa: E731
        if self.generator.mode == "memory":
            idx = selected[..., None, None].expand(-1, -1, *cand_memory.shape[2:])  # (B, K, M, H)
            single = cand_memory.gather(1, idx).flatten(0, 1).unsqueeze(1)  # (B*K, 1, M, H)
            return self.generator(
                rep(batch.queries), rep(batch.answers), memory=single, instructions=rep(batch.instructions)
            )
        texts = [[t] for row in self._texts(cand_ids, selected) for t in row]
        return self.generator(
            rep(batch.queries), rep(batch.answers), passages=texts, instructions=rep(batch.instructions)
        )

    def _pretrain_inputs(self, batch: RAGBatch) -> ObjectiveInputs:
        """Stage 1: answer from the first gold passage's memory; memory-mean vs token-mean MSE."""
        golds = [g[0] for g in batch.gold_ids]
        texts = [self.corpus[self.corpus.index_of(p)].full_text() for p in golds]
        out = self.compressor(texts)
        gen = self.generator(
            batch.queries, batch.answers, memory=out.memory.unsqueeze(1), instructions=batch.instructions
        )
        tok = self.generator.tokenizer(
            texts,
            add_special_tokens=False,
            padding=True,
            truncation=True,
            max_length=self.compressor.max_length,
            return_tensors="pt",
        )
        ids, mask = tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device).bool()
        with torch.no_grad():
            token_embeds = self.generator.model.get_input_embeddings()(ids)  # (B, L, H)
        B = len(batch)
        zeros = torch.zeros(B, 1, device=self.device)
        return ObjectiveInputs(
            scores=zeros,
            gold=torch.ones(B, 1, dtype=torch.bool, device=self.device),
            answer_nll=gen.nll,
            pretrain={"nll": gen.nll, "memory": out.memory, "token_embeds": token_embeds, "token_mask": mask},
        )

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
        for name, value in retrieval.compute().items():
            self.log(f"{split}/{name}", value)
        if self.hparams.eval_generate:
            for name, value in answers.compute().items():
                self.log(f"{split}/{name}", value)
        retrieval.reset()
        answers.reset()
        pairs = self._instruction_pairs()
        if pairs:
            self.log(f"{split}/p_mrr", self.instruction_following(pairs)["p_mrr"])

    def _instruction_pairs(self) -> list:
        """The datamodule's held-out instruction pairs (``RAGData.instruction_pairs``), if any."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data = getattr(dm, "data", None)
        return list(getattr(data, "instruction_pairs", None) or [])

    @torch.no_grad()
    def _eval_step(self, batch: RAGBatch, retrieval: RetrievalMetrics, answers: AnswerMetrics) -> None:
        ranked, cand_ids = self.rank(batch.queries, batch.instructions, batch.candidate_ids)
        retrieval.update(ranked, batch.gold_ids)
        if self.hparams.eval_generate:
            preds = self.answer_from_candidates(batch.queries, batch.instructions, cand_ids)
            answers.update(preds, batch.all_answers)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        retriever_ids = {id(p) for p in self._passage_encoder_params()}
        retriever_ids |= {
            id(p) for n, p in self.query_encoder.named_parameters() if not n.startswith("projector.")
        }
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
