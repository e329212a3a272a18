"""Group-relative advantages (GRPO-style) and the degenerate-group filter.

Pure functions over plain lists, so the arithmetic is unit-tested without any role running.
"""

from __future__ import annotations

from collections.abc import Sequence


def group_advantages(rewards: Sequence[float]) -> list[float]:
    """Advantages of one group: each reward minus the group mean.

    No division by the group std: with binary rewards and small groups that scales a single lucky sample
    up to a huge advantage (the "Dr. GRPO" length/difficulty bias); centring alone keeps the estimate
    unbiased and the loss scale stable.
    """
    if not rewards:
        raise ValueError("group_advantages needs at least one reward")
    mean = sum(rewards) / len(rewards)
    return [float(r - mean) for r in rewards]


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
