"""Train on synthesized queries (``jrag synthesize``), evaluate on a BEIR folder's real ones.

``SynthesizedSource(path, beir=DIR)``: the corpus is the BEIR folder's (plus any passages the
file generated), train holds the file's records as examples (``query``, ``instruction``, gold =
``positive_ids``, no answers), val and test are both the folder's ``eval_split`` queries (its
real training queries are not used: compare with ``BeirSource`` on them at equal N). Without ``beir`` the corpus is the generated
passages and ``val_fraction`` / ``test_fraction`` of the records are held out. ``max_train``
keeps the first N records (the count of distinct synthesized examples in a data study).
"""

from __future__ import annotations

from pathlib import Path

from joint_rag.data.formats import BeirSource
from joint_rag.data.reading import DataError, get_field, iter_jsonl, require_file
from joint_rag.data.types import Corpus, DataSource, Example, Passage, RAGData, check_examples


def read_synthesized(path: Path) -> tuple[list[Example], list[Passage]]:
    """The records of a ``jrag synthesize`` file as examples, and the passages it generated."""
    examples, passages, seen = [], [], {}
    for lineno, rec in iter_jsonl(require_file(path, "JSONL records of `jrag synthesize`")):
        where = f"{path}:{lineno}"
        qid = str(get_field(rec, "query_id", where))
        if qid in seen:
            raise DataError(f"{where}: duplicate query_id {qid!r} (first on line {seen[qid]})")
        seen[qid] = lineno
        positives = get_field(rec, "positive_ids", where, list)
        if not positives or not all(isinstance(p, (str, int)) and not isinstance(p, bool) for p in positives):
            raise DataError(f"{where}: field 'positive_ids' must be a non-empty list of passage ids")
        passage = get_field(rec, "passage", where, dict, optional=True)
        if passage is not None:
            passages.append(
                Passage(
                    str(get_field(passage, "_id", f"{where}: passage")),
                    "",
                    get_field(passage, "text", f"{where}: passage"),
                )
            )
        examples.append(
            Example(
                query=get_field(rec, "query", where),
                answers=[],
                gold_passage_ids=[str(p) for p in positives],
                instruction=get_field(rec, "instruction", where, optional=True),
                example_id=qid,
                meta={"where": where, "synthetic": True},
            )
        )
    if not examples:
        raise DataError(f"{path}: no records in the file")
    return examples, passages


class SynthesizedSource(DataSource):
    """See the module docstring.

    Args:
        path: the ``jrag synthesize`` JSONL file.
        beir: a BEIR folder: its corpus, and its ``eval_split`` queries for val/test.
        eval_split: the folder's qrels split to evaluate on.
        val_fraction: without ``beir``: the fraction of the records held out for val.
        test_fraction: without ``beir``: the fraction of the records held out for test.
        max_train: keep the first this-many training records (None: all).
        disjoint_train: with ``beir``: drop records whose positives are gold for an evaluation
            query, before ``max_train`` (as ``BeirSource(disjoint_train=True)`` drops real
            training queries): the fair comparison with the real queries.
        seed: split seed.
    """

    def __init__(
        self,
        path: str | Path,
        beir: str | Path | None = None,
        eval_split: str = "test",
        val_fraction: float = 0.0,
        test_fraction: float = 0.2,
        max_train: int | None = None,
        disjoint_train: bool = False,
        seed: int = 0,
    ) -> None:
        self.path = Path(path)
        self.beir = Path(beir) if beir is not None else None
        self.eval_split = eval_split
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.max_train = max_train
        self.disjoint_train = disjoint_train
        self.seed = seed

    def load(self) -> RAGData:
        examples, generated = read_synthesized(self.path)
        if self.beir is not None:
            real = BeirSource(self.beir, eval_split=self.eval_split)
            base = real.read_corpus()
            evals = real.read_qrels(self.eval_split, base, real.read_queries())
            corpus = Corpus([*base, *generated], source=f"{self.beir} + {self.path}")
            train, val, test = examples, list(evals), list(evals)
            if self.disjoint_train:
                held = {p for ex in evals for p in ex.gold_passage_ids}
                train = [ex for ex in train if not held.intersection(ex.gold_passage_ids)]
        else:
            if not generated:
                raise DataError(
                    f"{self.path}: the records generated no passages; give beir: the corpus they came from"
                )
            corpus = Corpus(generated, source=str(self.path))
            n_val, n_test = (
                round(self.val_fraction * len(examples)),
                round(self.test_fraction * len(examples)),
            )
            val, test, train = examples[:n_val], examples[n_val : n_val + n_test], examples[n_val + n_test :]
        if self.max_train is not None:
            if self.max_train > len(train):
                raise DataError(
                    f"{self.path}: max_train = {self.max_train} but the file has {len(train)} training records"
                    + (" after disjoint_train" if self.disjoint_train else "")
                )
            train = train[: self.max_train]
        check_examples(train + val + test, corpus, str(self.path))
        return RAGData(corpus=corpus, train=train, val=val, test=test)
