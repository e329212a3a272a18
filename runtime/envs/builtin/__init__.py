"""Built-in environments, by id; `rlrun.runtime.envs.registry` finds these and installed ones.

Their answers are words of the tiny model's vocabulary (one token each)."""

from __future__ import annotations

from collections.abc import Callable

from rlrun.runtime.envs.base import Environment
from rlrun.runtime.envs.builtin.calculator import Calculator
from rlrun.runtime.envs.builtin.color_codeword import ColorCodeword
from rlrun.runtime.envs.builtin.text_reverse import TextReverse
from rlrun.runtime.envs.verifiers_env import VerifiersEnvironment

BUILTIN: dict[str, Callable[..., Environment]] = {
    ColorCodeword.id: ColorCodeword,
    TextReverse.id: TextReverse,
    Calculator.id: Calculator,
    VerifiersEnvironment.id: VerifiersEnvironment,  # a verifiers taskset, run in its own interpreter
}
