"""A multi-turn episode's token ids as training samples: exact ids, a mask over sampled tokens. Pure.

Each turn of an episode is one chat completion: inference renders the conversation into prompt ids P_k and
samples completion ids C_k (with their logprobs). When P_{k+1} starts with P_k + C_k, the tokens between
(the end of the assistant message, the environment's messages, the next assistant header) are context:
the turn continues the same sample, masked out, with logprob 0. When it does not (the renderer re-tokenized
the decoded assistant text differently from what was sampled: a byte-level model that sampled half of a
UTF-8 character, two tokens that re-encode as one word), no single token sequence holds what the policy
saw at every turn, so the turn starts a new sample whose prompt is exactly P_{k+1}. Either way every sample
is a sequence inference really conditioned on, the mask covers exactly the tokens it sampled, and each
sampled token keeps its own inference logprob; nothing is re-tokenized.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Segment:
    """One training sample of an episode: `prompt_ids` then `completion_ids` (sampled and context tokens)."""

    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    completion_logprobs: list[float] = field(default_factory=list)
    completion_mask: list[int] = field(default_factory=list)  # 1: sampled by the policy, 0: context
    turns: int = 0

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.completion_ids


@dataclass(frozen=True)
class Turn:
    prompt_ids: Sequence[int]
    completion_ids: Sequence[int]
    logprobs: Sequence[float]


def stitch(turns: Sequence[Turn]) -> list[Segment]:
    """The episode's samples: consecutive turns merged while each prompt extends the sequence before it."""
    segments: list[Segment] = []
    for turn in turns:
        if len(turn.completion_ids) != len(turn.logprobs):
            raise ValueError(f"{len(turn.completion_ids)} completion ids but {len(turn.logprobs)} logprobs")
        current = segments[-1] if segments else None
        so_far = current.ids if current is not None else []
        prompt = list(turn.prompt_ids)
        if current is not None and len(prompt) >= len(so_far) and prompt[: len(so_far)] == so_far:
            context = prompt[len(so_far) :]
            current.completion_ids += context
            current.completion_logprobs += [0.0] * len(context)
            current.completion_mask += [0] * len(context)
        else:
            current = Segment(prompt_ids=prompt)
            segments.append(current)
        current.completion_ids += list(turn.completion_ids)
        current.completion_logprobs += [float(x) for x in turn.logprobs]
        current.completion_mask += [1] * len(turn.completion_ids)
        current.turns += 1
    return segments
