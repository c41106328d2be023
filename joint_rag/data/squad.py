"""`SquadSource`: SQuAD v1.1/v2.0 JSON (also XQuAD); a passage per paragraph, group = article."""

from __future__ import annotations

from joint_rag.data.file_sources import FileSource, dedupe
from joint_rag.data.reading import get_field, read_json, require_file
from joint_rag.data.types import Corpus, Example, Passage


class SquadSource(FileSource):
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
        split_by: "group" (default), "order" or "ids" (`SplitSource` says how each divides).
        train_ids: example ids for train, a list or a file of one id per line (`SplitSource`).
        val_ids: example ids for validation (as `train_ids`).
        test_ids: example ids for test (as `train_ids`).
        evaluate_all: every example in val and in test, train empty (`SplitSource`).
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
                            answers=dedupe(texts),
                            gold_passage_ids=[pid],
                            instruction=get_field(qa, "instruction", qwhere, optional=True),
                            example_id=get_field(qa, "id", qwhere),
                            meta={"where": qwhere},
                        )
                    )
        corpus = Corpus(passages, source=str(path))
        return corpus, examples
