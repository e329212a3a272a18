"""`calculator`: arithmetic with a calculator tool, over several assistant turns (the multi-turn example).

The user asks for `a op b op c`. Each assistant turn may call the tool by writing an expression
(`3*4+1`); the environment answers with a `tool` message holding its value, or a short hint when the turn
had none. The episode ends when the assistant answers with a bare number, or after `max_turns` turns. The
reward is 1 for the right final number and `format_reward` for any other bare number (so a policy that
has not learnt arithmetic yet still gets a signal for answering in the right form).
"""

from __future__ import annotations

import ast
import operator
import random
import re
from typing import Any

from pydantic import BaseModel, Field

from rlrun.runtime.envs.base import Example, MultiTurnEnvironment

EXPRESSION = re.compile(r"\d+(?:\s*[-+*]\s*\d+)+")
NUMBER = re.compile(r"^\s*(-?\d+)\s*\.?\s*$")
LAST_NUMBER = re.compile(r"(-?\d+)\D*$")
OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
MAX_EXPRESSION_CHARS = 64
HINT = "no expression"


def evaluate(expression: str) -> int | None:
    """The value of an integer expression of + - * (anything else, or too long: None). Never eval()."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        return None

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            return OPS[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"unsupported {type(node).__name__}")

    try:
        return value(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ValueError):
        return None


class Calculator(MultiTurnEnvironment):
    id = "calculator"

    class Args(BaseModel):
        model_config = {"extra": "forbid"}
        num_examples: int = Field(100, ge=1, le=100_000)
        max_operand: int = Field(9, ge=1, le=1000)
        max_turns: int = Field(3, ge=1, le=16)
        format_reward: float = Field(0.1, ge=0.0, le=1.0)
        seed: int = Field(0, ge=0)

    def __init__(
        self, num_examples: int, max_operand: int, max_turns: int, format_reward: float, seed: int
    ) -> None:
        self.num_examples, self.max_operand, self.seed = num_examples, max_operand, seed
        self.max_turns, self.format_reward = max_turns, format_reward

    def __len__(self) -> int:
        return self.num_examples

    def make_example(self, index: int) -> Example:
        rng = random.Random(f"{self.seed}:{index}")
        a, b, c = (rng.randint(1, self.max_operand) for _ in range(3))
        question = f"{a}*{b}+{c}"
        return Example(f"{self.id}-{index}", [{"role": "user", "content": f"{question}=?"}], str(a * b + c))

    def respond(self, example: Example, messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        text = messages[-1].get("content") or ""
        if NUMBER.match(text):
            return None  # a final answer
        calls = EXPRESSION.findall(text)
        value = evaluate(calls[0]) if calls else None
        return [{"role": "tool", "content": HINT if value is None else str(value)}]

    def reward(self, example: Example, completion: str) -> float:
        match = LAST_NUMBER.search(completion)
        if match is None:
            return 0.0
        return 1.0 if match.group(1) == example.answer else self.format_reward
