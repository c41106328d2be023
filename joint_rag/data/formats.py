"""Readers for public QA/retrieval formats into `RAGData` (a `Corpus` plus split `Example`s).

Each reader is a small config class (choose it from YAML with `class_path`/`init_args`) whose
`load()` returns `RAGData`. Every problem in the input raises one `DataError` naming the file
and the line, record or field; malformed rows are never skipped silently.

- `SquadSource`: SQuAD v1.1/v2.0 JSON (also XQuAD); a passage per paragraph, group = article.
- `BeirSource`: a BEIR folder (corpus.jsonl, queries.jsonl, qrels/{split}.tsv).
- `HotpotQASource`: HotpotQA, original list layout or Hugging Face columnar layout (JSON/JSONL).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from joint_rag.data.reading import (
    get_field,
    iter_jsonl,
    json_problem,
    read_json,
    read_lines,
    read_text,
    require_file,
)
from joint_rag.data.splits import IdList, limit, split_by_group, split_by_ids, split_by_order
from joint_rag.data.types import Corpus, DataError, DataSource, Example, Passage, RAGData, check_examples


def _dedupe(xs: list[str]) -> list[str]:
    return list(dict.fromkeys(xs))


SPLIT_BY = ("group", "order", "ids")


def _id_list(value: str | Path | Sequence[str] | None, name: str) -> IdList | None:
    """Listed example ids with where each was listed: a YAML list, or a file of one id a line."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        path = require_file(Path(value), f"a file of example ids for {name}, one per line")
        return [
            (line.strip(), f"{path}:{lineno}")
            for lineno, line in read_lines(path)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    return [(str(x), f"{name}[{i}]") for i, x in enumerate(value)]


class _SplitSource(DataSource):
    """How a source divides its examples into train/val/test. The split options of every
    file source:

    Args:
        split_by: how the examples are divided: "group" (at random by the fractions, whole
            groups to one split; the default), "order" (in file order by the fractions: train
            first, then val, then test) or "ids" (by `train_ids` / `val_ids` / `test_ids`,
            implied when any of them is set; the fractions are then ignored).
        train_ids: example ids for train: a list, or the path of a file with one id per line
            (blank lines and lines starting with `#` skipped). None: train takes every example
            not listed for val or test; when set, every example must be listed somewhere.
        val_ids: example ids for validation (a list or a file, as `train_ids`).
        test_ids: example ids for test (a list or a file, as `train_ids`).
        evaluate_all: put every example in val and in test (train empty), to evaluate a model
            on the whole file; excludes `split_by` other than "group" and the id lists.
    """

    def _init_split(
        self,
        split_by: str,
        train_ids: str | list[str] | None,
        val_ids: str | list[str] | None,
        test_ids: str | list[str] | None,
        evaluate_all: bool,
    ) -> None:
        name = type(self).__name__
        if split_by not in SPLIT_BY:
            raise ValueError(f"{name}.split_by must be one of {', '.join(SPLIT_BY)}, got {split_by!r}")
        listed = [
            k
            for k, v in (("train_ids", train_ids), ("val_ids", val_ids), ("test_ids", test_ids))
            if v is not None
        ]
        for key, value in (("train_ids", train_ids), ("val_ids", val_ids), ("test_ids", test_ids)):
            if value is not None and not isinstance(value, (str, Path, list, tuple)):
                raise ValueError(
                    f"{name}.{key} must be a list of ids or a file path, got {type(value).__name__}"
                )
        if split_by == "ids" and not listed:
            raise ValueError(f"{name}.split_by is 'ids' but none of train_ids, val_ids, test_ids is set")
        if listed and split_by == "order":
            raise ValueError(f"{name}: split_by 'order' and {listed[0]} exclude each other; set one")
        if evaluate_all and (listed or split_by != "group"):
            what = listed[0] if listed else f"split_by={split_by!r}"
            raise ValueError(f"{name}: evaluate_all and {what} exclude each other; set one")
        self.split_by = "ids" if listed else split_by
        self.train_ids, self.val_ids, self.test_ids = train_ids, val_ids, test_ids
        self.evaluate_all = evaluate_all

    def _id_lists(self) -> tuple[IdList | None, IdList | None, IdList | None]:
        return (
            _id_list(self.train_ids, "train_ids"),
            _id_list(self.val_ids, "val_ids"),
            _id_list(self.test_ids, "test_ids"),
        )

    def _divide(
        self, examples: list[Example], corpus: Corpus, val: float, test: float, seed: int, source: str
    ) -> tuple[list[Example], list[Example], list[Example]]:
        """(train, val, test) by the split options (fractions `val`, `test` where they apply)."""
        if self.evaluate_all:
            return [], list(examples), list(examples)
        if self.split_by == "ids":
            return split_by_ids(examples, *self._id_lists(), source=source)
        if self.split_by == "order":
            return split_by_order(examples, val, test)
        return split_by_group(examples, corpus, val, test, seed)


def _limited(corpus: Corpus, train: list, val: list, test: list, n: int | None, seed: int) -> RAGData:
    return RAGData(corpus, limit(train, n, seed), limit(val, n, seed), limit(test, n, seed))


# ----------------------------------------------------------------------------- SQuAD


class _FileSource(_SplitSource):
    """Options shared by single-file sources (see `SquadSource` for what they mean)."""

    def __init__(
        self,
        path: str | Path,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        seed: int = 0,
        max_examples: int | None = None,
        split_by: str = "group",
        train_ids: str | list[str] | None = None,
        val_ids: str | list[str] | None = None,
        test_ids: str | list[str] | None = None,
        evaluate_all: bool = False,
    ) -> None:
        self.path = Path(path)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.max_examples = max_examples
        self._init_split(split_by, train_ids, val_ids, test_ids, evaluate_all)

    def read(self) -> tuple[Corpus, list[Example]]:  # pragma: no cover - interface
        raise NotImplementedError

    def load(self) -> RAGData:
        """Read the file and split it (see the split options)."""
        corpus, examples = self.read()
        train, val, test = self._divide(
            examples, corpus, self.val_fraction, self.test_fraction, self.seed, str(self.path)
        )
        return _limited(corpus, train, val, test, self.max_examples, self.seed)


class SquadSource(_FileSource):
    """SQuAD-format JSON (SQuAD v1.1, v2.0, XQuAD): one passage per paragraph.

    Passage ids are `{title}#{paragraph index}`, the group is the article title, and the
    default splits are article-disjoint. Unanswerable SQuAD v2.0 questions keep `answers=[]`.

    Args:
        path: the JSON file (`data[].title`, `data[].paragraphs[].context`,
            `data[].paragraphs[].qas[].{id, question, answers[].text}`; an optional
            `qas[].instruction` is the question's `Example.instruction`).
        val_fraction: fraction of questions (whole articles) for validation.
        test_fraction: fraction of questions (whole articles) for test.
        seed: split and subsampling seed.
        max_examples: keep at most this many examples per split (random by seed); None keeps all.
        split_by: "group" (default), "order" or "ids" (`_SplitSource` says how each divides).
        train_ids: example ids for train, a list or a file of one id per line (`_SplitSource`).
        val_ids: example ids for validation (as `train_ids`).
        test_ids: example ids for test (as `train_ids`).
        evaluate_all: every example in val and in test, train empty (`_SplitSource`).
    """

    def read(self) -> tuple[Corpus, list[Example]]:
        """The corpus and all examples, unsplit."""
        path = require_file(self.path, "a SQuAD-format JSON file with a top-level 'data' list")
        articles = get_field(read_json(path), "data", f"{path}: top level", list)
        passages: list[Passage] = []
        examples: list[Example] = []
        for a, article in enumerate(articles):
            where = f"{path}: data[{a}]"
            title = get_field(article, "title", where)
            for p, para in enumerate(get_field(article, "paragraphs", where, list)):
                pwhere = f"{where}.paragraphs[{p}]"
                pid = f"{title}#{p}"
                passages.append(Passage(pid, title, get_field(para, "context", pwhere), group=title))
                for q, qa in enumerate(get_field(para, "qas", pwhere, list)):
                    qwhere = f"{pwhere}.qas[{q}]"
                    answers = get_field(qa, "answers", qwhere, list)
                    texts = [
                        get_field(ans, "text", f"{qwhere}.answers[{i}]") for i, ans in enumerate(answers)
                    ]
                    examples.append(
                        Example(
                            query=get_field(qa, "question", qwhere),
                            answers=_dedupe(texts),
                            gold_passage_ids=[pid],
                            instruction=get_field(qa, "instruction", qwhere, optional=True),
                            example_id=get_field(qa, "id", qwhere),
                            meta={"where": qwhere},
                        )
                    )
        corpus = Corpus(passages, source=str(path))
        return corpus, examples


# ----------------------------------------------------------------------------- BEIR


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


QRELS_FORMATS = {
    "beir": "BEIR (query id<TAB>passage id<TAB>score)",
    "trec": "TREC (query id, iteration, passage id, relevance; whitespace-separated)",
}


def _qrels_header(line: str) -> bool:
    """A first line whose score column is not a number (BEIR's `query-id corpus-id score`)."""
    tabs, words = line.split("\t"), line.split()
    return not (len(tabs) >= 3 and _is_number(tabs[2].strip())) and not (
        len(words) == 4 and _is_number(words[3])
    )


def _qrels_format(line: str) -> str:
    """ "trec" for a 4-column line whose last column is a number, else "beir"."""
    words = line.split()
    tabs = line.split("\t")
    return "trec" if len(words) == 4 and len(tabs) != 3 and _is_number(words[3]) else "beir"


def read_qrels_grades(path: Path, corpus: Corpus, queries) -> dict[str, dict[str, float]]:
    """Graded judgements of a qrels file, BEIR (header, then ``query-id<TAB>corpus-id<TAB>score``)
    or TREC (``qid iter docid rel``): query id -> passage id -> grade, queries in order of first
    appearance. Every query id must be in ``queries`` and every passage id in ``corpus``; errors
    name the file and line."""
    grades: dict[str, dict[str, float]] = {}
    judged_on: dict[tuple[str, str], int] = {}
    fmt: str | None = None
    first = 0
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        if fmt is None:
            if lineno == 1 and _qrels_header(line):
                continue  # the header line, whatever its column names
            fmt, first = _qrels_format(line), lineno
        if fmt == "trec":
            cols = line.split()
            if len(cols) != 4:
                raise DataError(
                    f"{path}:{lineno}: expected 4 whitespace-separated columns (query id, iteration, "
                    f"passage id, relevance), got {len(cols)}; line {first} made this a "
                    f"{QRELS_FORMATS['trec']} file: do not mix formats"
                )
            qid, pid, score_text = cols[0], cols[2], cols[3]
        else:
            cols = line.split("\t")
            if len(cols) < 3:
                raise DataError(
                    f"{path}:{lineno}: expected 3 tab-separated columns (query id, passage id, score), "
                    f"got {len(cols)} (formats read: {QRELS_FORMATS['beir']} or {QRELS_FORMATS['trec']})"
                )
            qid, pid, score_text = cols[0].strip(), cols[1].strip(), cols[2].strip()
        try:
            score = float(score_text)
        except ValueError:
            raise DataError(
                f"{path}:{lineno}: score {score_text!r} is not a number "
                f"(read as {QRELS_FORMATS[fmt]}, from line {first})"
            ) from None
        if qid not in queries:
            raise DataError(f"{path}:{lineno}: query id {qid!r} is not in queries.jsonl")
        if pid not in corpus:
            raise DataError(f"{path}:{lineno}: passage id {pid!r} is not in corpus.jsonl")
        judged = grades.setdefault(qid, {})
        if pid in judged and judged[pid] != score:
            raise DataError(
                f"{path}:{lineno}: query {qid!r} and passage {pid!r} are judged {score_text} here "
                f"but {judged[pid]:g} on line {judged_on[qid, pid]}; keep one judgement"
            )
        judged.setdefault(pid, score)
        judged_on.setdefault((qid, pid), lineno)
    return grades


class BeirSource(_SplitSource):
    """A BEIR dataset folder: `corpus.jsonl`, `queries.jsonl`, `qrels/{split}.tsv`.

    Qrels files are BEIR (a header, then `query-id<TAB>corpus-id<TAB>score`, read by position
    whatever the header says) or TREC (`qid iter docid rel`, whitespace-separated, no header);
    the format is detected from the first judgement line and every line must follow it. Grades
    are kept (`Example.grades`, explicit 0 judgements included: judged, not relevant) and the
    passages with grade > 0 (grade >= 1 for integer grades) are the gold passages; nDCG uses the
    grades. A query whose judgements are all 0 has nothing to learn or evaluate and is left out.
    Records name their id `_id` (or `id`). Answers come from the query's `metadata.answers`
    when present (MS MARCO), else `answers=[]` (retrieval only). A query's optional
    `instruction` field is its `Example.instruction` (what counts as relevant; prepended to the
    query by the retriever). Every passage's group is its own id.

    If `qrels/{train_split}.tsv` exists, train comes from it and the eval split's queries are
    divided by group into val (`val_fraction` of them) and test (the rest; `val_fraction=0`
    keeps the whole eval split as test, for comparison with published figures). Otherwise the
    eval split's queries are divided by group into train/val/test by the two fractions.
    `split_by: order` divides them in file order instead; `evaluate_all` puts the whole eval
    split in val and in test (train from `qrels/{train_split}.tsv` if it exists, else empty):
    the switch for a folder with test qrels only. With id lists, the examples are the eval
    split's queries and those of the train split that are not also eval queries.

    Args:
        path: the dataset folder.
        train_split: name of the training qrels file (without `.tsv`).
        eval_split: name of the evaluation qrels file (without `.tsv`).
        val_fraction: fraction of the divided queries that go to validation.
        test_fraction: fraction of queries for test when there is no train split (ignored
            otherwise: then test is the eval split less val).
        seed: split and subsampling seed.
        max_examples: keep at most this many examples per split (random by seed); None keeps all.
        disjoint_train: drop training queries whose gold passages are gold for a val/test
            query (the official BEIR splits share some passages, e.g. 181 in SciFact).
        split_by: "group" (default), "order" or "ids" (`_SplitSource` says how each divides).
        train_ids: example ids for train, a list or a file of one id per line (`_SplitSource`).
        val_ids: example ids for validation (as `train_ids`).
        test_ids: example ids for test (as `train_ids`).
        evaluate_all: every example in val and in test, train empty (`_SplitSource`).
        max_train: keep this many training examples (after `disjoint_train`; random by `seed`,
            the same N for every training seed): the count of distinct real examples in a data
            study (compare `SynthesizedSource(max_train=)`). None keeps all.
    """

    def __init__(
        self,
        path: str | Path,
        train_split: str = "train",
        eval_split: str = "test",
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        seed: int = 0,
        max_examples: int | None = None,
        disjoint_train: bool = False,
        split_by: str = "group",
        train_ids: str | list[str] | None = None,
        val_ids: str | list[str] | None = None,
        test_ids: str | list[str] | None = None,
        evaluate_all: bool = False,
        max_train: int | None = None,
    ) -> None:
        if max_train is not None and max_train < 1:
            raise ValueError(f"BeirSource: max_train must be a positive count or null, got {max_train}")
        self.path = Path(path)
        self.max_train = max_train
        self.train_split = train_split
        self.eval_split = eval_split
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.max_examples = max_examples
        self.disjoint_train = disjoint_train
        self._init_split(split_by, train_ids, val_ids, test_ids, evaluate_all)

    def read_corpus(self) -> Corpus:
        """All passages of `corpus.jsonl`."""
        path = require_file(
            self.path / "corpus.jsonl", "a BEIR corpus.jsonl with {_id, title, text} per line"
        )
        passages: list[Passage] = []
        seen: dict[str, int] = {}
        for lineno, rec in iter_jsonl(path):
            pid = get_field(rec, ("_id", "id"), f"{path}:{lineno}")
            if pid in seen:
                raise DataError(
                    f"{path}:{lineno}: duplicate passage id {pid!r} (first on line {seen[pid]}); "
                    "give every passage its own id"
                )
            seen[pid] = lineno
            title = get_field(rec, "title", f"{path}:{lineno}", optional=True) or ""
            passages.append(Passage(pid, title, get_field(rec, "text", f"{path}:{lineno}")))
        return Corpus(passages, source=str(path))

    def read_queries(self) -> dict[str, tuple[str, list[str], dict]]:
        """Query id -> (text, answers, metadata) from `queries.jsonl` (`where` in the metadata)."""
        path = require_file(self.path / "queries.jsonl", "a BEIR queries.jsonl with {_id, text} per line")
        queries: dict[str, tuple[str, list[str], dict]] = {}
        lines: dict[str, int] = {}
        for lineno, rec in iter_jsonl(path):
            where = f"{path}:{lineno}"
            qid = get_field(rec, ("_id", "id"), where)
            if qid in queries:
                raise DataError(
                    f"{where}: duplicate query id {qid!r} (first on line {lines[qid]}); "
                    "give every query its own id"
                )
            meta = get_field(rec, "metadata", where, dict, optional=True) or {}
            answers = get_field(meta, "answers", f"{where}: metadata", list, optional=True) or []
            if not all(isinstance(a, str) for a in answers):
                raise DataError(f"{where}: field 'metadata.answers' should be a list of strings")
            text = get_field(rec, "text", where)
            instruction = get_field(rec, "instruction", where, optional=True)
            if instruction is not None:  # what counts as relevant for this query (Example.instruction)
                meta = {**meta, "instruction": instruction}
            queries[qid], lines[qid] = (text, _dedupe(answers), {**meta, "where": where}), lineno
        return queries

    def read_qrels(self, split: str, corpus: Corpus, queries: dict) -> list[Example]:
        """Examples of one qrels split (BEIR or TREC lines), in order of first appearance of each query."""
        path = require_file(
            self.path / "qrels" / f"{split}.tsv",
            "a BEIR qrels file (header, then query-id<TAB>corpus-id<TAB>score) or TREC qrels "
            "(query-id iteration corpus-id relevance)",
        )
        grades = read_qrels_grades(path, corpus, queries)
        examples = []
        for qid, judged in grades.items():
            gold = [pid for pid, grade in judged.items() if grade > 0]
            if not gold:
                continue  # only non-relevant judgements: nothing to learn or evaluate
            text, answers, meta = queries[qid]
            extra = {k: v for k, v in meta.items() if k not in ("answers", "instruction")}
            examples.append(
                Example(
                    text,
                    list(answers),
                    gold,
                    instruction=meta.get("instruction"),
                    example_id=qid,
                    meta={"split": split, **extra},
                    grades=dict(judged),
                )
            )
        if not examples:
            raise DataError(
                f"{path}: no query has a judgement with score > 0; a qrels file needs at least one "
                "relevant passage"
            )
        return examples

    def load(self) -> RAGData:
        """Read the folder and split it (see the class docstring)."""
        data = self._load_splits()
        if self.max_train is None:
            return data
        if self.max_train > len(data.train):
            raise DataError(
                f"{self.path}: max_train = {self.max_train} but the folder gives {len(data.train)} training "
                "queries" + (" after disjoint_train" if self.disjoint_train else "")
            )
        return dataclasses.replace(data, train=limit(data.train, self.max_train, self.seed))

    def _load_splits(self) -> RAGData:
        if not self.path.is_dir():
            raise DataError(
                f"{self.path}: folder not found; expected a BEIR folder with corpus.jsonl, queries.jsonl, qrels/"
            )
        corpus, queries = self.read_corpus(), self.read_queries()
        evals = self.read_qrels(self.eval_split, corpus, queries)
        train = None
        if (self.path / "qrels" / f"{self.train_split}.tsv").is_file():
            train = self.read_qrels(self.train_split, corpus, queries)
        n, s, source = self.max_examples, self.seed, str(self.path)
        if self.split_by == "ids":
            eval_ids = {ex.example_id for ex in evals}
            pool = evals + [ex for ex in train or [] if ex.example_id not in eval_ids]
            return _limited(corpus, *self._divide(pool, corpus, 0.0, 0.0, s, source), n, s)
        if train is None:
            tr, va, te = self._divide(evals, corpus, self.val_fraction, self.test_fraction, s, source)
            return _limited(corpus, tr, va, te, n, s)
        # val_fraction of the eval queries (whole groups) to val, the rest to test
        if self.evaluate_all:
            val, test = list(evals), list(evals)
        else:
            test, val, _ = self._divide(evals, corpus, self.val_fraction, 0.0, s, source)
        if self.disjoint_train:
            held = {corpus[corpus.index_of(p)].group_key for ex in evals for p in ex.gold_passage_ids}
            train = [
                ex
                for ex in train
                if not any(corpus[corpus.index_of(p)].group_key in held for p in ex.gold_passage_ids)
            ]
        return _limited(corpus, train, val, test, n, s)


# ----------------------------------------------------------------------------- HotpotQA


def _read_records(path: Path) -> list[tuple[str, dict]]:
    """(location, record) pairs from a JSON list or a JSONL file (Hugging Face `to_json`)."""
    if path.suffix != ".jsonl":
        text = read_text(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg != "Extra data" or not text.lstrip().startswith("{"):
                raise DataError(f"{path}:{e.lineno}: malformed JSON ({json_problem(e)})") from None
        else:
            if isinstance(data, dict) and isinstance(data.get("question"), list):  # one dict of columns
                n = len(data["question"])
                data = [
                    {k: v[i] for k, v in data.items() if isinstance(v, list) and len(v) == n}
                    for i in range(n)
                ]
            if not isinstance(data, list):
                raise DataError(
                    f"{path}: expected a JSON list of HotpotQA records, got {type(data).__name__}"
                )
            return [(f"{path}: record {i}", rec) for i, rec in enumerate(data)]
    return [(f"{path}:{lineno}", rec) for lineno, rec in iter_jsonl(path)]


def _hotpot_context(rec: dict, where: str) -> list[tuple[str, list[str]]]:
    """(title, sentences) pairs from either HotpotQA layout."""
    ctx = get_field(rec, "context", where, (list, dict))
    if isinstance(ctx, dict):  # Hugging Face: {title: [...], sentences: [[...], ...]}
        titles = get_field(ctx, "title", f"{where}: context", list)
        sents = get_field(ctx, "sentences", f"{where}: context", list)
        if len(titles) != len(sents):
            raise DataError(
                f"{where}: field 'context' has {len(titles)} titles but {len(sents)} sentence lists"
            )
        pairs = list(zip(titles, sents))
    else:  # original: [[title, [sentences...]], ...]
        pairs = []
        for i, item in enumerate(ctx):
            if not (isinstance(item, list) and len(item) == 2):
                raise DataError(f"{where}: field 'context[{i}]' should be [title, [sentences...]]")
            pairs.append((item[0], item[1]))
    for i, (title, sentences) in enumerate(pairs):
        if not (
            isinstance(title, str)
            and isinstance(sentences, list)
            and all(isinstance(x, str) for x in sentences)
        ):
            raise DataError(
                f"{where}: field 'context' entry {i} should be a title and a list of sentence strings"
            )
    return pairs


def _hotpot_support(rec: dict, where: str) -> list[str]:
    """Supporting-fact titles, in order, from either layout."""
    sf = get_field(rec, "supporting_facts", where, (list, dict))
    if isinstance(sf, dict):
        titles = get_field(sf, "title", f"{where}: supporting_facts", list)
    else:
        titles = []
        for i, item in enumerate(sf):
            if not (isinstance(item, list) and item and isinstance(item[0], str)):
                raise DataError(f"{where}: field 'supporting_facts[{i}]' should be [title, sentence index]")
            titles.append(item[0])
    return _dedupe([str(t) for t in titles])


class HotpotQASource(_FileSource):
    """HotpotQA (distractor setting) in its original list layout or the Hugging Face layout.

    Each context paragraph becomes a passage (deduplicated by title and text; its id is the
    title, suffixed ` (2)`, ` (3)`... when one title has different texts); its group is the
    title. Each example's `candidate_ids` are its context paragraphs and its gold passages are
    those of its supporting-fact titles. Note: two-title questions chain groups together, so
    on large files a few big components can make the split fractions approximate.

    Args:
        path: a JSON list of records, or a JSONL file with one record per line. Records are
            `{_id|id, question, answer, supporting_facts, context}` in either layout.
        val_fraction: fraction of questions for validation (group-disjoint).
        test_fraction: fraction of questions for test (group-disjoint).
        seed: split and subsampling seed.
        max_examples: keep at most this many examples per split (random by seed); None keeps all.
        split_by: "group" (default), "order" or "ids" (`_SplitSource` says how each divides).
        train_ids: example ids for train, a list or a file of one id per line (`_SplitSource`).
        val_ids: example ids for validation (as `train_ids`).
        test_ids: example ids for test (as `train_ids`).
        evaluate_all: every example in val and in test, train empty (`_SplitSource`).
    """

    def read(self) -> tuple[Corpus, list[Example]]:
        """The corpus and all examples, unsplit (`meta["where"]`: the file and line or record)."""
        path = require_file(self.path, "a HotpotQA JSON list or JSONL file")
        passages: list[Passage] = []
        by_content: dict[tuple[str, str], str] = {}
        per_title: dict[str, int] = {}
        examples: list[Example] = []
        for where, rec in _read_records(path):
            qid = get_field(rec, ("_id", "id"), where)
            cands: list[str] = []
            title_to_pid: dict[str, str] = {}
            for title, sentences in _hotpot_context(rec, where):
                text = " ".join(s.strip() for s in sentences if s.strip())
                pid = by_content.get((title, text))
                if pid is None:
                    per_title[title] = per_title.get(title, 0) + 1
                    pid = title if per_title[title] == 1 else f"{title} ({per_title[title]})"
                    by_content[(title, text)] = pid
                    passages.append(Passage(pid, title, text, group=title))
                cands.append(pid)
                title_to_pid.setdefault(title, pid)
            gold = []
            for title in _hotpot_support(rec, where):
                if title not in title_to_pid:
                    raise DataError(
                        f"{where}: field 'supporting_facts' names title {title!r}, which is not in 'context'"
                    )
                gold.append(title_to_pid[title])
            meta = {k: rec[k] for k in ("type", "level") if k in rec}
            meta["where"] = where
            examples.append(
                Example(
                    query=get_field(rec, "question", where),
                    answers=[get_field(rec, "answer", where)],
                    gold_passage_ids=gold,
                    candidate_ids=_dedupe(cands),
                    example_id=qid,
                    hops=max(1, len(gold)),
                    meta=meta,
                )
            )
        corpus = Corpus(passages, source=str(path))
        check_examples(examples, corpus, str(path))
        return corpus, examples
