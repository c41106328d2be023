"""Compressor pretraining (CLaRa stage 1): teach the memory to stand in for the passage.

    L = w_nll * mean_b NLL_b + w_mse * mse_b
    mse = mean_{b,h} ( mean_m memory[b, m, h] - masked_mean_l token_embeds[b, l, h] )^2

NLL_b is the generator's NLL of a target text given ONE passage's memory: the passage itself
(reconstruction) or an answer to a question about it (QA). The MSE term aligns the mean of
the M memory vectors with the mean of the passage's L token embeddings (padding excluded).
The retriever is not trained. Source: CLaRa (apple/ml-clara), compressor pretraining stage.

`inputs.pretrain` holds:
    nll: (B,) generator NLL given the passage's memory.
    memory: (B, M, H) memory vectors of the passage.
    token_embeds: (B, L, H) the passage's token embeddings (the alignment target).
    token_mask: (B, L) bool, real passage tokens (optional: all tokens if absent).
"""

from __future__ import annotations

from torch import Tensor

from joint_rag.losses.base import Objective, ObjectiveInputs

TASKS = ("answer", "reconstruct")


def memory_alignment_mse(memory: Tensor, token_embeds: Tensor, token_mask: Tensor | None = None) -> Tensor:
    """MSE between the mean memory vector and the masked mean token embedding.

    Args:
        memory: (B, M, H) memory vectors.
        token_embeds: (B, L, H) passage token embeddings.
        token_mask: (B, L) bool real tokens, or None for all tokens.

    Returns:
        scalar mean over B and H of (mean_m memory - masked_mean_l token_embeds)^2.
    """
    memory_mean = memory.mean(dim=1)  # (B, H)
    if token_mask is None:
        token_mean = token_embeds.mean(dim=1)  # (B, H)
    else:
        weights = token_mask.to(token_embeds.dtype)[:, :, None]  # (B, L, 1)
        token_mean = (token_embeds * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)  # (B, H)
    return (memory_mean - token_mean).pow(2).mean()


class CompressorPretraining(Objective):
    """CLaRa stage-1 compressor pretraining: answer/reconstruct NLL + memory alignment MSE.

        L = nll_weight * mean_b pretrain["nll"]_b
            + mse_weight * MSE(mean_m memory, masked_mean_l token_embeds)

    Returned terms are already multiplied by their weights (the combined objective sums the
    terms); a term with weight 0 is neither computed nor returned, so its tensors may be
    absent. The NLL term is named `{task}_nll` (`answer_nll` or `reconstruct_nll`).
    Source: CLaRa (apple/ml-clara), stage 1 (compressor pretraining).

    Args:
        task: "reconstruct" (NLL of the passage text) or "answer" (NLL of a QA answer); only
            names the NLL term.
        nll_weight: weight of the NLL term.
        mse_weight: weight of the memory/token mean-alignment MSE term.
    """

    needs = frozenset({"pretrain"})

    def __init__(self, task: str = "reconstruct", nll_weight: float = 1.0, mse_weight: float = 1.0) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"CompressorPretraining.task must be one of {TASKS}, got {task!r}")
        if nll_weight < 0 or mse_weight < 0:
            raise ValueError(
                f"CompressorPretraining weights must be >= 0, got nll_weight={nll_weight}, mse_weight={mse_weight}"
            )
        self.task = task
        self.nll_weight = float(nll_weight)
        self.mse_weight = float(mse_weight)

    def _get(self, pretrain: dict[str, Tensor], key: str, shape: str) -> Tensor:
        if key not in pretrain:
            raise ValueError(
                f"CompressorPretraining needs inputs.pretrain[{key!r}] {shape}; got keys {sorted(pretrain)}"
            )
        return pretrain[key]

    def forward(self, inputs: ObjectiveInputs) -> dict[str, Tensor]:
        if inputs.pretrain is None:
            raise ValueError(
                "CompressorPretraining needs inputs.pretrain (a dict with 'nll', 'memory', 'token_embeds'); "
                "the training module fills it when an objective lists 'pretrain' in `needs`"
            )
        pretrain = inputs.pretrain
        terms: dict[str, Tensor] = {}
        if self.nll_weight != 0.0:
            nll = self._get(pretrain, "nll", "(B,)")  # (B,)
            terms[f"{self.task}_nll"] = self.nll_weight * nll.mean()
        if self.mse_weight != 0.0:
            memory = self._get(pretrain, "memory", "(B, M, H)")  # (B, M, H)
            token_embeds = self._get(pretrain, "token_embeds", "(B, L, H)")  # (B, L, H)
            if memory.shape[-1] != token_embeds.shape[-1] or memory.shape[0] != token_embeds.shape[0]:
                raise ValueError(
                    f"CompressorPretraining: pretrain['memory'] {tuple(memory.shape)} and "
                    f"pretrain['token_embeds'] {tuple(token_embeds.shape)} must agree on B and H"
                )
            token_mask = pretrain.get("token_mask")  # (B, L) or None
            if token_mask is not None:
                token_mask = token_mask.bool()
            terms["mse"] = self.mse_weight * memory_alignment_mse(memory, token_embeds, token_mask)
        return terms
