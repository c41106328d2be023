"""The data types: a `Corpus` of passages, the `Example`s that ask about them, instruction pairs,
the `RAGData` a source loads and the `DataSource` interface.

Every reader in `joint_rag.data.formats` and the synthetic knowledge base produce these types,
so everything downstream (collate, index, training, evaluation) sees one format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from joint_rag.errors import DataError

__all__ = ["Corpus", "DataError", "DataSource", "Example", "InstructionPair", "Passage", "RAGData"]


@dataclass(frozen=True)
class Passage:
    """One retrievable unit of text.

    Attributes:
        passage_id: unique id within its corpus.
        title: title (article name, entity name); may be empty.
        text: the passage body.
        group: what the passage is about (article, entity); splits never share a group
            between training and evaluation questions. Defaults to the passage id.
    """

    passage_id: str
    title: str
    text: str
    group: str = ""

    @property
    def group_key(self) -> str:
        return self.group or self.passage_id

    def full_text(self) -> str:
        """Title and text as the encoders read them."""
        return f"{self.title}: {self.text}" if self.title else self.text


class Corpus(Sequence[Passage]):
    """An ordered collection of passages with unique ids (row i of the index is passage i).

    Raises:
        DataError: if empty or if two passages share an id (naming the id and `source`).
    """

    def __init__(self, passages: Iterable[Passage], source: str = "<corpus>") -> None:
        self.passages: list[Passage] = list(passages)
        self.source = source
        if not self.passages:
            raise DataError(f"{source}: the corpus is empty (no passages)")
        self._index: dict[str, int] = {}
        for i, p in enumerate(self.passages):
            if p.passage_id in self._index:
                raise DataError(
                    f"{source}: duplicate passage id {p.passage_id!r} (rows {self._index[p.passage_id]} and {i})"
                )
            self._index[p.passage_id] = i

    def __len__(self) -> int:
        return len(self.passages)

    def __getitem__(self, i):  # type: ignore[override]
        return self.passages[i]

    def __iter__(self) -> Iterator[Passage]:
        return iter(self.passages)

    def __contains__(self, passage_id: object) -> bool:
        return passage_id in self._index

    def index_of(self, passage_id: str) -> int:
        """Row of `passage_id`; raises DataError naming the id if unknown."""
        try:
            return self._index[passage_id]
        except KeyError:
            raise DataError(f"{self.source}: unknown passage id {passage_id!r}") from None

    @property
    def ids(self) -> list[str]:
        return [p.passage_id for p in self.passages]

    def texts(self) -> list[str]:
        return [p.full_text() for p in self.passages]

    def fingerprint(self) -> str:
        """sha256 of the passages in order (ids, titles, texts): equal exactly for the same corpus."""
        digest = hashlib.sha256()
        for p in self.passages:
            for part in (p.passage_id, p.title, p.text):
                digest.update(part.encode("utf-8") + b"\x00")
        return f"sha256:{digest.hexdigest()[:16]}"


@dataclass
class Example:
    """One question with its answers and the passages that support it.

    Attributes:
        query: the question text.
        answers: acceptable answer strings (first is the training target); may be empty for
            retrieval-only data.
        gold_passage_ids: passages that support the answer (relevance labels).
        candidate_ids: optional per-example candidate list (HotpotQA style); when set, the
            retriever ranks these instead of searching the index.
        instruction: optional text that changes what counts as relevant.
        example_id: a stable id (from the source file where it has one).
        hops: 1 for single-hop questions, 2 for two-hop (synthetic data).
        meta: anything else the source keeps (e.g. ``where``: the file and line it came from).
        grades: graded judgements (qrels): passage id -> grade, with explicit 0 judgements
            (judged, not relevant) kept. The gold passages are those with grade > 0, which for
            the integer grades of TREC and BEIR files is grade >= 1. None: binary relevance,
            every gold passage has grade 1 (see `relevance`).
    """

    query: str
    answers: list[str]
    gold_passage_ids: list[str]
    candidate_ids: list[str] | None = None
    instruction: str | None = None
    example_id: str = ""
    hops: int = 1
    meta: dict = field(default_factory=dict)
    grades: dict[str, float] | None = None

    @property
    def answer(self) -> str:
        return self.answers[0] if self.answers else ""

    @property
    def relevance(self) -> dict[str, float]:
        """Passage id -> grade for the metrics: `grades`, or grade 1 for each gold passage."""
        if self.grades is not None:
            return dict(self.grades)
        return {pid: 1.0 for pid in self.gold_passage_ids}


@dataclass(frozen=True)
class InstructionPair:
    """One query under an original and a changed instruction (FollowIR), for p-MRR.

    Attributes:
        query_id: an id for reports.
        query: the query text (the original query of a pair of two full queries).
        instruction_og: the original instruction ("" for none).
        instruction_new: the changed instruction ("" for none).
        changed: passage ids relevant under ``instruction_og`` and not under ``instruction_new``.
        query_new: the changed side's query, for datasets that rewrite the query instead of
            appending an instruction (``query_og`` / ``query_new``); None: the same query.
        relevant_og: graded judgements under the original instruction (passage id -> grade;
            grade > 0 is relevant), for nDCG@10 under it; None: not judged.
        relevant_new: the same under the changed instruction (FollowIR's ``qrels_changed``).
        candidates: rank only these passages (FollowIR's ``top_ranked``, a reranking task);
            None: the whole corpus.
        family: the instruction family (synthetic pairs: ``synthetic_instructions.FAMILIES``),
            for p-MRR per family and on seen versus unseen families; None: not grouped.
    """

    query_id: str
    query: str
    instruction_og: str
    instruction_new: str
    changed: tuple[str, ...]
    query_new: str | None = None
    relevant_og: dict[str, float] | None = None
    relevant_new: dict[str, float] | None = None
    candidates: tuple[str, ...] | None = None
    family: str | None = None


@dataclass
class RAGData:
    """A corpus and its examples, split into train/val/test lists of examples.

    ``instruction_pairs`` (optional): held-out instruction pairs; validation and test then also
    log p-MRR (``joint_rag.instructions``). ``instruction_families``: the instruction families
    the training split holds examples of (pairs of other families are "unseen").
    """

    corpus: Corpus
    train: list[Example]
    val: list[Example]
    test: list[Example] = field(default_factory=list)
    instruction_pairs: list[InstructionPair] = field(default_factory=list)
    instruction_families: tuple[str, ...] = ()


def check_examples(examples: Sequence[Example], corpus: Corpus, source: str) -> None:
    """Raise DataError if any example names a passage missing from `corpus`."""
    for n, ex in enumerate(examples):
        for pid in list(ex.gold_passage_ids) + list(ex.candidate_ids or []):
            if pid not in corpus:
                raise DataError(
                    f"{source}: example {ex.example_id or n} names passage id {pid!r}, which is not in the corpus"
                )


class DataSource:
    """Base class of everything that can be named as ``data.source`` in a YAML experiment.

    Subclasses take their options in ``__init__`` and build the data in ``load``.
    """

    def load(self) -> RAGData:  # pragma: no cover - interface
        raise NotImplementedError
