"""``SyntheticSource``: the built-in fictional knowledge base (``joint_rag.data.knowledge_base``)
as `RAGData`, split so that evaluation entities are unseen, with optional instruction data
(``joint_rag.data.synthetic_instructions``). The project's embedded default dataset: no files,
any size, built in milliseconds.
"""

from __future__ import annotations

from joint_rag.data.knowledge_base import KnowledgeBase, build_knowledge_base
from joint_rag.data.splits import limit, split_by_group
from joint_rag.data.synthetic_instructions import add_instruction_data
from joint_rag.data.types import DataSource, RAGData


class SyntheticSource(DataSource):
    """The fictional knowledge base as `RAGData`, split so evaluation entities are unseen.

    All passages (people and organisations) stay in the corpus; val/test questions are about
    people (and, for two-hop, organisations) that no training question is about.

    Args:
        num_entities: number of people.
        seed: seed for generation and for the split.
        val_fraction: fraction of questions (whole entities) for validation.
        test_fraction: fraction of questions (whole entities) for test.
        two_hop_fraction: probability that a question is two-hop (person -> employer).
        distractor_fraction: fraction of people sharing a name part and a fact with another.
        questions_per_entity: distinct attributes asked about per person (at most 7).
        max_examples: keep at most this many examples per split (random by seed); None keeps all.
        num_organisations: number of employers; default `max(2, num_entities // 5)`.
        passage_facts: sentence groups stated besides the intro (see `build_knowledge_base`).
        instruction_eval_towns: fraction of towns held out for instruction following: their
            instruction pairs (``synthetic_instructions.town_instruction_pairs``) become ``RAGData.instruction_pairs``,
            and validation/test log p-MRR on them. 0 (default): no pairs.
        decoys_per_question: hard negatives (``joint_rag.data.hard_negatives``): passages per
            question about the same person that repeat the question without the fact.
        answer_distractors_per_question: passages per question about a same-surname relative
            that state the answer string (they fool answer-string matching).
        oracle_candidates: N > 0 gives every example a candidate list (``candidate_ids``) of its
            gold passages followed by its own decoys, cut to N, for reading-ceiling runs with
            ``model.candidate_source: example`` and C = K = N (evaluation ranks the whole list,
            so the list is exactly what the generator reads). N = 2 reads the gold passage and a
            decoy (one-hop) or the person and the organisation (two-hop). 0 (default): none.
        instruction_examples: add at most this many instruction examples
            (``synthetic_instructions.town_instruction_examples``, random by seed) from the other towns to the training
            split. 0 (default): none. With ``instruction_exposures``: exactly this many distinct ones.
        instruction_families: the instruction families of the training examples (and of the
            evaluation pairs unless ``instruction_eval_families`` is given); see
            ``synthetic_instructions.FAMILIES``. Default ["pet"].
        instruction_eval_families: the families of the held-out pairs; those not in
            ``instruction_families`` are unseen in training (validation logs ``p_mrr_seen`` and
            ``p_mrr_unseen``). None: ``instruction_families``.
        instruction_exposures: None (default): the instruction examples are added once each. An
            integer E: exactly E instruction examples are added, the ``instruction_examples``
            distinct ones cycled, so a grid over the count holds exposure fixed.
    """

    def __init__(
        self,
        num_entities: int = 200,
        seed: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        two_hop_fraction: float = 0.0,
        distractor_fraction: float = 0.3,
        questions_per_entity: int = 3,
        max_examples: int | None = None,
        num_organisations: int | None = None,
        passage_facts: list[str] | None = None,
        instruction_eval_towns: float = 0.0,
        instruction_examples: int = 0,
        instruction_families: list[str] | None = None,
        instruction_eval_families: list[str] | None = None,
        instruction_exposures: int | None = None,
        decoys_per_question: int = 0,
        answer_distractors_per_question: int = 0,
        oracle_candidates: int = 0,
    ) -> None:
        if not 0.0 <= instruction_eval_towns < 1.0:
            raise ValueError(f"instruction_eval_towns must lie in [0, 1), got {instruction_eval_towns}")
        if instruction_examples < 0:
            raise ValueError(f"instruction_examples must be >= 0, got {instruction_examples}")
        self.instruction_eval_towns = instruction_eval_towns
        self.instruction_examples = instruction_examples
        self.instruction_families = list(instruction_families or ["pet"])
        self.instruction_eval_families = instruction_eval_families
        self.instruction_exposures = instruction_exposures
        self.num_entities = num_entities
        self.seed = seed
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.two_hop_fraction = two_hop_fraction
        self.distractor_fraction = distractor_fraction
        self.questions_per_entity = questions_per_entity
        self.max_examples = max_examples
        self.num_organisations = num_organisations
        self.passage_facts = passage_facts
        self.decoys_per_question = decoys_per_question
        self.answer_distractors_per_question = answer_distractors_per_question
        self.oracle_candidates = oracle_candidates

    def build(self) -> KnowledgeBase:
        """The unsplit knowledge base for these settings."""
        return build_knowledge_base(
            self.num_entities,
            self.seed,
            self.two_hop_fraction,
            self.distractor_fraction,
            self.questions_per_entity,
            self.num_organisations,
            self.passage_facts,
            self.decoys_per_question,
            self.answer_distractors_per_question,
        )

    def load(self) -> RAGData:
        """Build the knowledge base and split its questions by entity."""
        kb = self.build()
        if self.oracle_candidates < 0:
            raise ValueError(f"oracle_candidates must be >= 0, got {self.oracle_candidates}")
        if self.oracle_candidates:
            for ex in kb.examples:
                listed = list(ex.gold_passage_ids) + ex.meta.get("decoys", [])
                if len(listed) < self.oracle_candidates:
                    raise ValueError(
                        f"oracle_candidates={self.oracle_candidates}: example {ex.example_id} has only "
                        f"{len(listed)} gold passages and decoys; raise decoys_per_question"
                    )
                ex.candidate_ids = listed[: self.oracle_candidates]
        train, val, test = split_by_group(
            kb.examples, kb.corpus, self.val_fraction, self.test_fraction, self.seed
        )
        n, s = self.max_examples, self.seed
        data = RAGData(kb.corpus, limit(train, n, s), limit(val, n, s), limit(test, n, s))
        if self.instruction_eval_towns or self.instruction_examples or self.instruction_exposures:
            add_instruction_data(
                data,
                kb,
                self.instruction_eval_towns,
                self.instruction_examples,
                self.seed,
                families=self.instruction_families,
                eval_families=self.instruction_eval_families,
                exposures=self.instruction_exposures,
            )
        return data
