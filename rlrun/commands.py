"""Subcommands beyond `version`; each imports its library lazily."""

from __future__ import annotations
