"""End-to-end usefulness objective (CLaRa): the answer NLL itself, computed by the generator
on memory chosen by the straight-through top-k.

    L = mean_b  NLL(answer_b | query_b, memory of top-K(scores_b))

The gradient reaches the retriever because the selection's backward is the sequential masked
softmax of scores/temperature (see models/selection.py). Source: CLaRa (apple/ml-clara).

With ``retriever_gradient=False`` the training module selects on detached scores: the answer
loss then trains the generator side only (generator, projector, compressor memory), not the
retrieval scores; combine it with ``Similarity`` for a "similarity-trained retriever, trained
generator" baseline.
"""

from __future__ import annotations

from torch import Tensor

from joint_rag.losses.base import Objective, ObjectiveInputs


class EndToEnd(Objective):
    """Answer NLL through the differentiable top-k.

    Args:
        retriever_gradient: let the answer loss reach the retrieval scores through the top-k.
    """

    needs = frozenset({"answer_nll"})

    def __init__(self, retriever_gradient: bool = True) -> None:
        super().__init__()
        self.retriever_gradient = bool(retriever_gradient)

    def forward(self, inputs: ObjectiveInputs) -> dict[str, Tensor]:
        if inputs.answer_nll is None:
            raise ValueError("EndToEnd needs answer_nll")
        return {"answer_nll": inputs.answer_nll.mean()}
