"""One fingerprint of a module's weights for the file caches (``reader_cache``, ``index_cache``).

A cached value is reused only when it would come out the same: SHA-256 over a caller's salt, the
torch version, the thread count (CPU kernels round by thread count) and every parameter and
buffer (name, dtype, shape, device type, bytes).
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def module_fingerprint(model: nn.Module, salt: str) -> str:
    h = hashlib.sha256(f"{salt}|torch {torch.__version__}|threads {torch.get_num_threads()}".encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|{t.device.type}|".encode())
        h.update(t.cpu().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
