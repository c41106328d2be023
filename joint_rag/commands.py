"""Extra ``jrag`` subcommands beyond fit/validate/test."""

from __future__ import annotations
