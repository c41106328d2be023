"""JointRAG: load an exported system (see joint_rag/export.py) and retrieve/answer without Lightning.

    rag = JointRAG.from_pretrained("checkpoints/quickstart/export")
    rag.retrieve(["Who founded Veloria?"], k=5)   # [[(passage_id, score), ...]]
    rag.answer(["Who founded Veloria?"])          # [{"answer": ..., "passages": [...]}]

It reuses ``CandidateMixin`` (search, exact re-scoring, answering from candidates), so on the
same inputs it returns exactly the scores and greedy answers of the trained module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from joint_rag.data.corpus import Corpus, DataError, Passage
from joint_rag.data.formats import get_field, iter_jsonl
from joint_rag.export import (
    COMPRESSOR_DIR,
    COMPRESSOR_JSON,
    CORPUS_FILE,
    EXTRAS,
    FORMAT_VERSION,
    GENERATOR_DIR,
    GENERATOR_JSON,
    INDEX_DIR,
    MANIFEST,
    MEMORY_FILE,
    QUERY_ENCODER_DIR,
    ExportFormatError,
    quiet_transformers,
)
from joint_rag.index.passage_index import PassageIndex
from joint_rag.models.compressor import Compressor
from joint_rag.models.generator import Generator
from joint_rag.models.scoring import check_similarity, score_candidates
from joint_rag.models.selection import TopKSelector
from joint_rag.training.candidates import CandidateMixin

__all__ = ["ExportFormatError", "JointRAG"]

_MANIFEST_KEYS = ("format_version", "K", "M", "similarity", "num_candidates")
_COMPRESSOR_KEYS = (
    "num_memory_tokens",
    "max_length",
    "projector_layers",
    "retrieval",
    "output_dim",
    "projector",
)
_GENERATOR_KEYS = ("mode", "max_new_tokens", "max_passage_tokens", "max_answer_tokens", "system_prompt")


class JointRAG(CandidateMixin, nn.Module):
    """An exported retriever + generator, ready to retrieve and answer (eval mode, no_grad).

    Use :meth:`from_pretrained`. Attributes mirror ``JointRAGModule`` so the mixin's code runs
    unchanged: ``compressor``, ``query_encoder``, ``generator``, ``selector`` (K),
    ``similarity``, ``num_candidates`` (C), ``corpus`` and ``index``.
    """

    candidate_source = "index"

    def __init__(
        self,
        compressor: Compressor,
        query_encoder: Compressor,
        generator: Generator,
        corpus: Corpus,
        index: PassageIndex,
        k: int,
        similarity: str,
        num_candidates: int,
        corpus_memory: Tensor | None = None,
        corpus_retrieval: Tensor | None = None,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.compressor = compressor
        self.query_encoder = query_encoder
        self.generator = generator
        self.selector = TopKSelector(k=k)
        self.similarity = check_similarity(similarity)
        self.num_candidates = num_candidates
        self.corpus = corpus
        self.index = index
        self._corpus_memory = corpus_memory  # (N, M, H) or None: encoded on demand
        self._corpus_retrieval = corpus_retrieval  # (N, R, D) or None
        self.manifest = manifest or {}
        # requires_grad flags are left as the parts set them (projector and memory tokens keep
        # True, as in training): torch picks a different matmul path for a linear layer on a
        # non-contiguous input when its weight needs no grad, which changes the last bit of
        # the scores. Inference runs under torch.no_grad.
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.generator.model.get_input_embeddings().weight.device

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> JointRAG:
        """Load and validate an export folder written by ``jrag export`` / ``export_module``.

        Args:
            directory: the export folder.
            device: where the models run (the index searches on CPU).

        Raises:
            ExportFormatError: missing or invalid files, a newer ``format_version``, or parts
                that disagree (corpus vs index, memory size vs generator); the message names
                the file and what to do.
        """
        folder = Path(directory)
        if not folder.is_dir():
            raise ExportFormatError(f"{folder}: not a folder; export a model there with `jrag export` first")
        manifest = _read_json(folder / MANIFEST, _MANIFEST_KEYS)
        _check_version(folder / MANIFEST, manifest["format_version"])
        _check_files(folder)
        with quiet_transformers():
            compressor = _load_compressor(folder / COMPRESSOR_DIR, output_dim=None)
            q_cfg = _read_json(folder / QUERY_ENCODER_DIR / COMPRESSOR_JSON, ())
            query_encoder = (
                compressor
                if q_cfg.get("shared")
                else _load_compressor(folder / QUERY_ENCODER_DIR, compressor.output_dim, compressor)
            )
            generator = _load_generator(folder / GENERATOR_DIR)
        corpus = read_corpus(folder / CORPUS_FILE)
        try:
            index = PassageIndex.load(folder / INDEX_DIR)
        except ValueError as err:
            raise ExportFormatError(f"{err}; re-export the model") from err
        if index.passage_ids != corpus.ids:
            raise ExportFormatError(
                f"{folder / INDEX_DIR} holds {len(index)} passages but {folder / CORPUS_FILE} {len(corpus)} "
                "(or in another order); the folder mixes two exports: re-export the model"
            )
        memory, retrieval = _load_corpus_memory(folder / MEMORY_FILE, len(corpus))
        problems = []
        compressor.attach_generator(generator)
        if manifest["M"] != compressor.memory_slots:
            problems.append(
                f"M={manifest['M']} but the compressor gives {compressor.memory_slots} memory slots"
            )
        if compressor.output_dim != generator.hidden_size:
            problems.append(
                f"compressor output_dim {compressor.output_dim} != generator hidden {generator.hidden_size}"
            )
        if not 1 <= manifest["K"] <= manifest["num_candidates"]:
            problems.append(
                f"K={manifest['K']} must be between 1 and num_candidates={manifest['num_candidates']}"
            )
        if problems:
            raise ExportFormatError(f"{folder / MANIFEST}: " + "; ".join(problems) + "; re-export the model")
        rag = cls(
            compressor,
            query_encoder,
            generator,
            corpus,
            index,
            k=manifest["K"],
            similarity=manifest["similarity"],
            num_candidates=manifest["num_candidates"],
            corpus_memory=memory,
            corpus_retrieval=retrieval,
            manifest=manifest,
        )
        return rag.to(device)

    # ------------------------------------------------------------------ retrieval
    @torch.no_grad()
    def ranked_with_scores(
        self, queries: list[str], instructions: list[str | None] | None, n: int
    ) -> list[tuple[list[str], Tensor]]:
        """Search the top-n of the index, re-score exactly, sort: the ranking of ``rank``.

        Mirrors ``CandidateMixin.rank`` (with n = max(10, C) it returns the same order) and
        also keeps the exact scores.

        Returns:
            per query: passage ids best first, and their scores (n,) float32 on CPU.
        """
        _, cand = self.search(queries, instructions, n)
        q = self.encode_queries(queries, instructions)  # (B, R, D)
        out = []
        for b, row in enumerate(cand):
            p = self._retrieval_for(row)  # (n, R, D)
            s = score_candidates(q[b : b + 1], p.unsqueeze(0), self.similarity)[0]  # (n,)
            order = torch.argsort(s, descending=True, stable=True)
            out.append(([row[i] for i in order.tolist()], s[order].float().cpu()))
        return out

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
        ranked = self.ranked_with_scores(queries, instructions, max(k, 10, self.num_candidates))
        return [list(zip(ids[:k], scores[:k].tolist())) for ids, scores in ranked]

    @torch.no_grad()
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
        ranked = self.ranked_with_scores(questions, instructions, max(10, self.num_candidates))
        answers = self.answer_from_candidates(
            questions, instructions, [ids[: self.num_candidates] for ids, _ in ranked]
        )
        out = []
        for text, (ids, scores) in zip(answers, ranked):
            passages = []
            for pid, score in zip(ids[: self.selector.k], scores.tolist()):
                p = self.corpus[self.corpus.index_of(pid)]
                passages.append({"id": pid, "title": p.title, "text": p.text, "score": score})
            out.append({"answer": text, "passages": passages})
        return out


# ----------------------------------------------------------------------------- validation helpers
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


def _read_json(path: Path, required: tuple[str, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise ExportFormatError(f"{path}: missing; the folder is not a complete export: re-export the model")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportFormatError(f"{path}: not valid JSON ({err}); re-export the model") from err
    if not isinstance(obj, dict):
        raise ExportFormatError(
            f"{path}: expected a JSON object, got {type(obj).__name__}; re-export the model"
        )
    missing = [k for k in required if k not in obj]
    if missing:
        raise ExportFormatError(f"{path}: missing keys {missing}; re-export the model")
    return obj


def _check_version(path: Path, version: Any) -> None:
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ExportFormatError(f"{path}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ExportFormatError(
            f"{path}: format_version {version} was written by a newer joint-rag; this version reads "
            f"format_version <= {FORMAT_VERSION}: upgrade joint-rag (pip install -U joint-rag)"
        )


def _check_files(folder: Path) -> None:
    """Every file the loader needs is present (all missing ones named at once)."""
    need = [CORPUS_FILE, f"{INDEX_DIR}/meta.json", f"{QUERY_ENCODER_DIR}/{COMPRESSOR_JSON}"]
    for sub, meta in ((COMPRESSOR_DIR, COMPRESSOR_JSON), (GENERATOR_DIR, GENERATOR_JSON)):
        need += [f"{sub}/{meta}", f"{sub}/config.json", f"{sub}/tokenizer_config.json"]
    need += [f"{COMPRESSOR_DIR}/{EXTRAS}"]
    missing = [f for f in need if not (folder / f).is_file()]
    for sub in (COMPRESSOR_DIR, GENERATOR_DIR):
        if not any(
            (folder / sub / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")
        ):
            missing.append(f"{sub}/model.safetensors")
    if missing:
        raise ExportFormatError(
            f"{folder}: missing {', '.join(missing)}; the export is incomplete: re-export it"
        )


def _load_compressor(
    folder: Path, output_dim: int | None, passage_side: Compressor | None = None
) -> Compressor:
    """A Compressor from ``folder`` (backbone, compressor.json, extras.safetensors)."""
    cfg = _read_json(folder / COMPRESSOR_JSON, _COMPRESSOR_KEYS)
    cfg_path = folder / COMPRESSOR_JSON
    if cfg["projector"] not in ("own", "compressor", "none") or (
        cfg["projector"] != "own" and passage_side is None
    ):
        raise ExportFormatError(f"{cfg_path}: invalid projector {cfg['projector']!r}; re-export the model")
    try:
        comp = Compressor(
            backbone=str(folder),
            num_memory_tokens=cfg["num_memory_tokens"],
            max_length=cfg["max_length"],
            output_dim=cfg["output_dim"] if cfg["projector"] == "own" else None,
            projector_layers=cfg["projector_layers"],
            retrieval=cfg["retrieval"],
            lora_rank=0,
            freeze_backbone=True,
            memory=cfg.get("memory", "tokens"),
            extract_tokens=cfg.get("extract_tokens", 32),
            extract_max_tokens=cfg.get("extract_max_tokens", 96),
            extract_temperature=cfg.get("extract_temperature", 1.0),
        )
    except Exception as err:  # noqa: BLE001 - HF raises many types for a damaged folder
        raise ExportFormatError(f"{folder}: cannot load the backbone ({err}); re-export the model") from err
    comp.is_decoder = bool(cfg.get("is_decoder", comp.is_decoder))
    extras = _load_safetensors(folder / EXTRAS)
    try:
        comp.memory_tokens.data = extras["memory_tokens"].to(comp.memory_tokens.dtype)  # (M, H_b)
        if cfg["projector"] == "own":
            proj = {k.removeprefix("projector."): v for k, v in extras.items() if k.startswith("projector.")}
            comp.projector.load_state_dict(proj)
        if comp.scorer is not None:
            comp.scorer.load_state_dict(
                {k.removeprefix("scorer."): v for k, v in extras.items() if k.startswith("scorer.")}
            )
    except (KeyError, RuntimeError) as err:
        raise ExportFormatError(
            f"{folder / EXTRAS} does not match {cfg_path}: {err}; re-export the model"
        ) from err
    if comp.memory_tokens.shape != (comp.num_memory_tokens, comp.hidden):
        raise ExportFormatError(
            f"{folder / EXTRAS}: memory_tokens {tuple(comp.memory_tokens.shape)} != "
            f"(num_memory_tokens, hidden) = ({comp.num_memory_tokens}, {comp.hidden}); re-export the model"
        )
    if cfg["projector"] == "compressor":
        comp.projector, comp.output_dim = passage_side.projector, output_dim
    elif cfg["projector"] == "none":
        comp.projector = None
    return comp


def _load_generator(folder: Path) -> Generator:
    cfg = _read_json(folder / GENERATOR_JSON, _GENERATOR_KEYS)
    try:
        return Generator(
            backbone=str(folder),
            mode=cfg["mode"],
            train_mode="frozen",
            lora_rank=0,
            max_passage_tokens=cfg["max_passage_tokens"],
            max_answer_tokens=cfg["max_answer_tokens"],
            max_new_tokens=cfg["max_new_tokens"],
            system_prompt=cfg["system_prompt"],
            use_chat_template=bool(cfg.get("use_chat_template", True)),
        )
    except Exception as err:  # noqa: BLE001
        raise ExportFormatError(f"{folder}: cannot load the generator ({err}); re-export the model") from err


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(path)
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ...
        raise ExportFormatError(
            f"{path}: not a readable safetensors file ({err}); re-export the model"
        ) from err


def _load_corpus_memory(path: Path, n: int) -> tuple[Tensor | None, Tensor | None]:
    """The cached corpus memory (N, M, H) and retrieval vectors (N, R, D), if exported."""
    if not path.exists():
        return None, None
    tensors = _load_safetensors(path)
    memory, retrieval = tensors.get("memory"), tensors.get("retrieval")
    if memory is None or retrieval is None or memory.shape[0] != n or retrieval.shape[0] != n:
        raise ExportFormatError(
            f"{path}: expected 'memory' and 'retrieval' with {n} rows (one per passage); re-export the model"
        )
    return memory, retrieval


def read_corpus(path: Path) -> Corpus:
    """Read an exported ``corpus.jsonl`` ({_id, title, text, group} per line)."""
    try:
        passages = []
        for lineno, rec in iter_jsonl(path):
            where = f"{path}:{lineno}"
            passages.append(
                Passage(
                    str(get_field(rec, "_id", where, (str, int))),
                    get_field(rec, "title", where, optional=True) or "",
                    get_field(rec, "text", where),
                    get_field(rec, "group", where, optional=True) or "",
                )
            )
        return Corpus(passages, source=str(path))
    except DataError as err:
        raise ExportFormatError(f"{err}; re-export the model") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ExportFormatError(f"{path}: {err}; re-export the model") from err
