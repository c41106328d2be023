"""End-to-end usefulness objective (CLaRa): the answer NLL itself, computed by the generator
on memory chosen by the straight-through top-k.

    L = mean_b  NLL(answer_b | query_b, memory of top-K(scores_b))

The gradient reaches the retriever because the selection's backward is the sequential masked
softmax of scores/temperature (see models/selection.py). Source: CLaRa (apple/ml-clara).
"""

from __future__ import annotations

from torch import Tensor

from joint_rag.losses.base import Objective, ObjectiveInputs


class EndToEnd(Objective):
    """Answer NLL through the differentiable top-k."""

    needs = frozenset({"answer_nll"})

    def forward(self, inputs: ObjectiveInputs) -> dict[str, Tensor]:
        if inputs.answer_nll is None:
            raise ValueError("EndToEnd needs answer_nll")
        return {"answer_nll": inputs.answer_nll.mean()}
