"""A small batched generation engine on transformers, for CPU runs and tests.

Why not `model.generate`: it samples with the global RNG, so a request's tokens would depend on which
other requests shared its batch. Here every completion row has its own `torch.Generator` seeded from the
request seed and the choice index, so results are the same batched or alone (up to float rounding).

Logprobs are those of the distribution the token was sampled from: log_softmax(logits / temperature)
(before top-p; raw logits when greedy), like vLLM's `logprobs_mode=processed_logprobs` with top_p 1.
The trainer divides its logits by the same temperature, so the importance ratio starts at 1 at any
temperature (raw logprobs against temperature-scaled training logprobs put it off 1 whenever T != 1).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from rlrun.runtime.mm import mm_token_type_ids
from rlrun.runtime.models.chat import RENDERER_ONLY_TOKENS

WEIGHTS_FILE = "model.safetensors"
DONE_MARKER = "DONE"


@dataclass(frozen=True)
class GenerationRequest:
    """One chat request after rendering: prompt token ids, its images, sampling parameters."""

    prompt_ids: list[int]
    images: list[Image.Image] = field(default_factory=list)
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]  # includes the stop token when finish_reason == "stop"
    logprobs: list[float]
    finish_reason: str  # "stop" | "length"


def row_seed(seed: int, index: int) -> int:
    """Seed of choice `index` of a request: distinct per choice, independent of batching."""
    return (seed * 1_000_003 + index * 7_919 + 1) % (2**63 - 1)


def _legacy_to_module_name(key: str) -> str:
    """save_pretrained writes Qwen-VL weights under legacy names; map them to state-dict names."""
    if key.startswith("visual."):
        return "model." + key
    if key.startswith("model.") and not key.startswith(("model.language_model.", "model.visual.")):
        return "model.language_model." + key.removeprefix("model.")
    return key


class Engine:
    """Loads a Qwen2-VL-family model dir and generates padded batches; not thread-safe (one caller)."""

    def __init__(
        self, model_dir: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32
    ) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        self.model_dir = model_dir
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.image_processor = AutoImageProcessor.from_pretrained(model_dir)
        self.model = (
            AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        )
        config = self.model.config
        self.image_token_id: int = config.image_token_id
        self.pad_id: int = self.tokenizer.pad_token_id
        self.stop_ids = {self.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
        self.stop_ids.discard(None)
        # Tokens only the renderer may place: a sampled <|image_pad|> would make the trainer's forward
        # find more image tokens than images. Masked for sampling, not in the reported logprobs.
        vocab = self.tokenizer.get_vocab()
        self.banned_ids = sorted(vocab[t] for t in RENDERER_ONLY_TOKENS if t in vocab)
        self.version = 0

    # ------------------------------------------------------------------ weights

    def load_weights(self, weights_dir: Path, version: int) -> int:
        """Load `<weights_dir>/model.safetensors` (strict: every parameter, nothing extra) as `version`."""
        from safetensors.torch import load_file

        path = Path(weights_dir) / WEIGHTS_FILE
        if not (Path(weights_dir) / DONE_MARKER).is_file():
            raise FileNotFoundError(
                f"weights dir {weights_dir} has no {DONE_MARKER} marker (incomplete export)"
            )
        state = {_legacy_to_module_name(k): v for k, v in load_file(path).items()}
        expected = self.model.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        for key, tensor in state.items():
            if tensor.shape != expected[key].shape:
                raise ValueError(
                    f"{path}: {key} has shape {list(tensor.shape)}, model has {list(expected[key].shape)}"
                )
        self.model.load_state_dict(state, strict=True)
        self.version = version
        return version

    # ------------------------------------------------------------------ generation

    def _vision_inputs(self, requests: list[GenerationRequest]) -> dict[str, torch.Tensor]:
        """pixel_values/image_grid_thw in row order (a request with n choices repeats its images)."""
        pixels, grids = [], []
        for req in requests:
            if not req.images:
                continue
            out = self.image_processor(images=req.images, return_tensors="pt")
            pixels += [out["pixel_values"]] * req.n
            grids += [out["image_grid_thw"]] * req.n
        if not pixels:
            return {}
        return {
            "pixel_values": torch.cat(pixels).to(self.device),
            "image_grid_thw": torch.cat(grids).to(self.device),
        }

    @torch.inference_mode()
    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """Run all requests as one left-padded batch; returns each request's `n` completions."""
        rows = [(req, i) for req in requests for i in range(req.n)]
        length = max(len(req.prompt_ids) for req, _ in rows)
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), length), dtype=torch.long)
        for r, (req, _) in enumerate(rows):
            input_ids[r, length - len(req.prompt_ids) :] = torch.tensor(req.prompt_ids)
            attention[r, length - len(req.prompt_ids) :] = 1
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        vision = self._vision_inputs(requests)
        positions, deltas = self.model.model.get_rope_index(
            input_ids,
            mm_token_type_ids(input_ids, self.image_token_id),
            image_grid_thw=vision.get("image_grid_thw"),
            attention_mask=attention,
        )
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **vision,
        )
        generators = [torch.Generator().manual_seed(row_seed(self._seed(req), i)) for req, i in rows]
        temperature = torch.tensor([req.temperature for req, _ in rows], dtype=torch.float32)
        top_p = torch.tensor([req.top_p for req, _ in rows], dtype=torch.float32)
        limits = [req.max_tokens for req, _ in rows]
        tokens: list[list[int]] = [[] for _ in rows]
        logprobs: list[list[float]] = [[] for _ in rows]
        done = [False] * len(rows)
        banned = torch.tensor(self.banned_ids, dtype=torch.long)
        next_pos = attention.sum(-1, keepdim=True) + deltas.to(self.device)  # [rows, 1]
        for step in range(max(limits)):
            logits = out.logits[:, -1].float().cpu()
            sampled_logprobs = torch.log_softmax(logits / temperature.clamp(min=1e-6).unsqueeze(-1), dim=-1)
            sampled_logprobs = torch.where(
                (temperature == 0).unsqueeze(-1), torch.log_softmax(logits, dim=-1), sampled_logprobs
            )
            chosen = _sample(logits.index_fill(1, banned, float("-inf")), temperature, top_p, generators)
            for r, token in enumerate(chosen.tolist()):
                if done[r]:
                    continue
                tokens[r].append(token)
                logprobs[r].append(float(sampled_logprobs[r, token]))
                done[r] = token in self.stop_ids or len(tokens[r]) >= limits[r]
            if all(done):
                break
            attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
            position = (next_pos + step).unsqueeze(0).expand(3, -1, -1)
            out = self.model(
                input_ids=chosen.view(-1, 1).to(self.device),
                attention_mask=attention,
                position_ids=position,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
        results: list[list[Completion]] = []
        r = 0
        for req in requests:
            choices = []
            for _ in range(req.n):
                reason = "stop" if tokens[r] and tokens[r][-1] in self.stop_ids else "length"
                choices.append(Completion(tokens[r], logprobs[r], reason))
                r += 1
            results.append(choices)
        return results

    def _seed(self, req: GenerationRequest) -> int:
        return req.seed if req.seed is not None else random.SystemRandom().randrange(2**62)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)


def _sample(
    logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, generators: list[torch.Generator]
) -> torch.Tensor:
    """One token per row: greedy where temperature == 0, else top-p sampling with the row's generator."""
    greedy = logits.argmax(dim=-1)
    scaled = logits / temperature.clamp(min=1e-6).unsqueeze(-1)
    probs = torch.softmax(scaled, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    keep = sorted_probs.cumsum(-1) - sorted_probs < top_p.unsqueeze(-1)  # always keeps the top token
    sorted_probs = sorted_probs * keep
    chosen = torch.empty(len(generators), dtype=torch.long)
    for r, gen in enumerate(generators):
        if temperature[r] == 0:
            chosen[r] = greedy[r]
        else:
            chosen[r] = order[r, torch.multinomial(sorted_probs[r], 1, generator=gen)]
    return chosen


def default_device() -> str:
    """`RLRUN_INFERENCE_DEVICE` if set, else cuda when available, else cpu."""
    return os.environ.get("RLRUN_INFERENCE_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def apply_thread_limit() -> None:
    """Honour the pod's CPU budget: torch otherwise starts one thread per host core."""
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))


def engine_info(engine: Engine) -> dict[str, Any]:
    return {"model": str(engine.model_dir), "version": engine.version, "device": str(engine.device)}
