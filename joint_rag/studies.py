"""Ablation and data-scaling runners (grid x seeds -> table + plot). See issue 4."""

from __future__ import annotations
