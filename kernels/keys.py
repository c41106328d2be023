"""Sortable int64 keys of (score, passage index), the kernels' packing, in torch."""

from __future__ import annotations

import torch
from torch import Tensor

_LOW_MASK = 0xFFFFFFFF
_INT_MAX = 2147483647
_MIN_KEY = -(2**63)


def pack_keys(scores: Tensor, indices: Tensor) -> Tensor:
    """Torch twin of the kernel's ``_pack``: fp32 scores + int64 indices -> sortable int64 keys."""
    bits = scores.float().contiguous().view(torch.int32)
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (bits.long() << 32) | (_INT_MAX - indices)


def unpack_keys(keys: Tensor) -> tuple[Tensor, Tensor]:
    """int64 keys -> (fp32 scores, int64 indices); inverse of ``pack_keys``."""
    hi = (keys >> 32).to(torch.int32)
    bits = hi ^ ((hi >> 31) & 0x7FFFFFFF)
    return bits.view(torch.float32), _INT_MAX - (keys & _LOW_MASK)
