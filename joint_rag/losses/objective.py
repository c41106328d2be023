"""Weighted sum of objectives, as configured in YAML.

    total = sum_i weight_i * sum(terms of objective_i, less its `logged_terms`)

Logged terms are `{objective_name}/{term}`. In YAML the objectives and their weights are two
mappings of the training module (a missing weight is 1.0)::

    model:
      objectives:
        end_to_end: {class_path: joint_rag.losses.EndToEnd}
        similarity: {class_path: joint_rag.losses.Similarity, init_args: {temperature: 0.05}}
      objective_weights: {end_to_end: 1.0, similarity: 0.5}
"""

from __future__ import annotations

from torch import Tensor, nn

from joint_rag.losses.base import Objective, ObjectiveInputs


class CombinedObjective(nn.Module):
    """Holds named objectives and their weights; `forward` returns (total, terms)."""

    def __init__(self, objectives: dict[str, Objective], weights: dict[str, float] | None = None) -> None:
        super().__init__()
        weights = dict(weights or {})
        unknown = set(weights) - set(objectives)
        if unknown:
            raise ValueError(
                f"objective weights name unknown objectives {sorted(unknown)}; known: {sorted(objectives)}"
            )
        self.objectives = nn.ModuleDict(objectives)
        self.weights = {name: float(weights.get(name, 1.0)) for name in objectives}

    @property
    def needs(self) -> frozenset[str]:
        out: set[str] = set()
        for name, obj in self.objectives.items():
            if self.weights[name] != 0.0:
                out |= set(obj.needs)
        return frozenset(out)

    @property
    def label_readers(self) -> list[str]:
        """Names of the weighted objectives that read the gold passage ids (``reads_labels``)."""
        return [n for n, obj in self.objectives.items() if self.weights[n] != 0.0 and obj.reads_labels]

    def _answer_objectives(self) -> dict[str, Objective]:
        return {
            name: obj
            for name, obj in self.objectives.items()
            if self.weights[name] != 0.0 and "answer_nll" in obj.needs
        }

    @property
    def answer_to_retriever(self) -> list[str]:
        """Names of the weighted answer-NLL objectives whose loss is meant to reach the retrieval
        scores through the top-k (all but ``EndToEnd(retriever_gradient=False)``)."""
        return [n for n, obj in self._answer_objectives().items() if getattr(obj, "retriever_gradient", True)]

    @property
    def answer_trains_retriever(self) -> bool:
        """False when every weighted answer-NLL objective opts out of the retriever gradient
        (``EndToEnd(retriever_gradient=False)``): the module then selects on detached scores."""
        return not self._answer_objectives() or bool(self.answer_to_retriever)

    def forward(self, inputs: ObjectiveInputs) -> tuple[Tensor, dict[str, Tensor]]:
        total = inputs.scores.new_zeros(())
        terms: dict[str, Tensor] = {}
        for name, obj in self.objectives.items():
            w = self.weights[name]
            if w == 0.0:
                continue
            logged = getattr(obj, "logged_terms", frozenset())
            for term, value in obj(inputs).items():
                terms[f"{name}/{term}"] = value.detach()
                if term not in logged:
                    total = total + w * value
        return total, terms
