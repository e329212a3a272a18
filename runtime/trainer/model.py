"""Loading the policy for training and the small distributed wrappers around it.

On CPU the ranks keep full replicas and sum gradients with one all-reduce per parameter (gloo); on CUDA
the model is sharded with FSDP2 `fully_shard` over NCCL. Full (unsharded) state dicts for export and
checkpoints come from `torch.distributed.checkpoint.state_dict`, which works for both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def load_policy(path: Path | str, device: torch.device) -> torch.nn.Module:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch.float32)
    return model.to(device).train()


def shard_if_cuda(model: torch.nn.Module, device: torch.device) -> bool:
    """FSDP2 on GPU (each decoder layer, then the root); returns whether the model is sharded."""
    if device.type != "cuda" or dist.get_world_size() == 1:
        return False
    from torch.distributed.fsdp import fully_shard

    for module in model.modules():
        if type(module).__name__.endswith("DecoderLayer"):
            fully_shard(module)
    fully_shard(model)
    return True


def sum_gradients(model: torch.nn.Module) -> None:
    """Replicated ranks: sum grads across ranks (the loss is already divided by the global token count)."""
    if dist.get_world_size() == 1:
        return
    for param in model.parameters():
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return get_model_state_dict(model, options=FULL)


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "model": get_model_state_dict(model, options=FULL),
        "optimizer": get_optimizer_state_dict(model, optimizer, options=FULL),
    }


def restore_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, state["model"], options=options)
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=options)
