"""Built-in environments, by id. Their answers are words of the tiny model's vocabulary (one token each)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlrun.runtime.envs.base import Environment
from rlrun.runtime.envs.builtin.color_codeword import ColorCodeword
from rlrun.runtime.envs.builtin.text_reverse import TextReverse

BUILTIN: dict[str, Callable[..., Environment]] = {
    ColorCodeword.id: ColorCodeword,
    TextReverse.id: TextReverse,
}


def make_environment(env_id: str, args: dict[str, Any] | None = None) -> Environment:
    """Instantiate a built-in environment; unknown ids and bad arguments raise ValueError naming them."""
    if env_id not in BUILTIN:
        raise ValueError(f"unknown environment {env_id!r}: built-ins are {sorted(BUILTIN)}")
    try:
        return BUILTIN[env_id](**(args or {}))
    except TypeError as err:
        raise ValueError(f"environment {env_id!r}: bad args {args!r}: {err}") from None
