"""Group-relative advantages (GRPO-style) and the degenerate-group filter.

Pure functions over plain lists, so the arithmetic is unit-tested without any role running.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def group_advantages(rewards: Sequence[float], eps: float = 1e-6) -> list[float]:
    """Advantages of one group: (reward - group mean) / (group std + eps), as in GRPO.

    The std division weights groups by how rare their successes are: a colour the policy gets right 1
    time in 8 pushes as hard as one it gets right half the time. With centring alone the groups already
    mostly right dominated each step, the shared answer distribution drifted to their codewords, and a
    colour whose codeword decayed to ~0 never produced a non-degenerate group again (reward stalled at
    0.5-0.75). Degenerate groups (std 0) give all-zero advantages and are dropped by `score_groups`.
    """
    if not rewards:
        raise ValueError("group_advantages needs at least one reward")
    mean = sum(rewards) / len(rewards)
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))
    return [float((r - mean) / (std + eps)) for r in rewards]


def is_degenerate(rewards: Sequence[float], tol: float = 1e-9) -> bool:
    """A group whose rewards are all equal carries no learning signal (every advantage is 0)."""
    return max(rewards) - min(rewards) <= tol


def split_groups(rewards: Sequence[float], group_size: int) -> list[list[float]]:
    """Cut a flat reward list (groups are contiguous) into groups of `group_size`."""
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards cannot be split into groups of {group_size}")
    return [list(rewards[i : i + group_size]) for i in range(0, len(rewards), group_size)]


def score_groups(rewards: Sequence[float], group_size: int) -> tuple[list[float], list[bool]]:
    """Advantages for a flat list of contiguous groups, and which samples to keep.

    A sample is kept iff its group is not degenerate; dropped samples still count in reward metrics.
    """
    advantages: list[float] = []
    keep: list[bool] = []
    for group in split_groups(rewards, group_size):
        degenerate = is_degenerate(group)
        advantages.extend(group_advantages(group))
        keep.extend([not degenerate] * len(group))
    return advantages, keep
