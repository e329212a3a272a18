"""The tiny random Qwen2-VL that CPU runs and tests train, built offline in code.

Why build it instead of downloading one: tests and `rlrun local` must run without any hub access, and
inference and trainer must load byte-identical weights. `resolve_model` builds it once per run under
`<run_dir>/model/` (temp dir + rename, so a concurrent or interrupted build never leaves a half model),
and every role loads it from there with `Qwen2VLForConditionalGeneration.from_pretrained`.

The tokenizer is byte-level (any text round-trips) plus the Qwen chat/vision special tokens and a fixed
word list (`WORD_TOKENS`) added as single tokens: environment answers drawn from it are one token long,
which is what lets a random model learn a task in ~100 steps.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image

BUILTIN_TINY = "builtin:tiny-qwen2-vl"
DONE_MARKER = "DONE"

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
WORD_TOKENS = (
    # NATO alphabet: codewords of the built-in environments (see runtime/envs/builtin).
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo",
    "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor",
    "whiskey", "xray", "yankee", "zulu",
    # Colour names, so prompts that name colours stay short.
    "red", "green", "blue", "yellow", "cyan", "magenta", "orange", "purple", "white", "black",
)  # fmt: skip

# Image geometry: every image is resized to IMAGE_SIDE x IMAGE_SIDE -> grid (1, 4, 4) -> 4 image tokens.
PATCH_SIZE = 14
MERGE_SIZE = 2
IMAGE_SIDE = PATCH_SIZE * MERGE_SIZE * 2


# The chat format `rlrun.runtime.models.chat.render_prompt` renders, as a template for engines that render
# prompts themselves (vLLM): an image part becomes one <|image_pad|> that the processor expands.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ('image', 'image_url') %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    """Byte-level BPE with no merges (256 byte tokens) + special tokens + `WORD_TOKENS` as whole words."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(w, single_word=True, normalized=False) for w in WORD_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_image_processor():  # -> Qwen2VLImageProcessorPil
    """Qwen2-VL PIL image processor pinned to one tiny size (min = max pixels), so any image -> 4 tokens."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    pixels = IMAGE_SIDE * IMAGE_SIDE
    return Qwen2VLImageProcessorPil(
        min_pixels=pixels,
        max_pixels=pixels,
        patch_size=PATCH_SIZE,
        merge_size=MERGE_SIZE,
        temporal_patch_size=2,
    )


def tiny_config(tokenizer):  # -> Qwen2VLConfig
    """A Qwen2-VL config scaled down to ~0.2 M parameters (hidden 64, 2 layers, vision depth 1)."""
    from transformers import Qwen2VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab_size = len(tokenizer)  # no padding rows: an id the tokenizer lacks must never be sampled
    text = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        # One 64-wide head: vLLM's CPU attention kernels take head_dim 64 (not 16), and M-RoPE's sections
        # (temporal, height, width) must sum to head_dim / 2.
        "num_attention_heads": 1,
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]},
        "bos_token_id": None,
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }
    vision = {
        "depth": 1,
        "embed_dim": 32,
        "hidden_size": 64,  # output width = text hidden size
        "num_heads": 2,
        "mlp_ratio": 2,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": 2,
    }
    return Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


WARMUP_TEXTS = (
    "What is the codeword for this colour?",
    "Name the codeword.",
    "Answer with one word.",
    "Reverse the order of these words: kilo lima",
)


# The answer words the warm-up spreads its mass over: the codewords of the built-in colour task at its
# default 4 colours. Over all 26 NATO words chance was 1/26, so most groups of 8 were all-wrong (no
# signal) for the first ~50 steps; over these 4 a group is all-wrong only (3/4)^8 = 10% of the time.
WARMUP_ANSWERS = WORD_TOKENS[:4]


def format_warmup(model, tokenizer, image_processor, seed: int, steps: int = 20, batch: int = 16) -> None:
    """Teach the answer *format* only: reply with a uniformly random word of `WARMUP_ANSWERS`, then <|im_end|>.

    A random model puts ~1/vocab on each answer word, so RL would see almost no reward for hundreds of
    steps. The targets here are drawn independently of the prompt and image, so afterwards each answer
    word gets ~1/4 whatever the input: RL starts at the image-blind ceiling (not above it) and every
    gain must come from the input. Few steps on purpose: training longer to ignore the input makes the
    body input-blind and stalls RL.
    """
    import random

    import torch

    from rlrun.runtime.mm import mm_token_type_ids
    from rlrun.runtime.models.chat import render_prompt

    rng = random.Random(seed)
    answers = [tokenizer.convert_tokens_to_ids(w) for w in WARMUP_ANSWERS]
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    for step in range(steps):
        text = WARMUP_TEXTS[step % len(WARMUP_TEXTS)]
        rows, images = [], []
        for _ in range(batch):
            content: list[dict] = [{"type": "text", "text": text}]
            if step % 2 == 0:
                content.insert(0, {"type": "image_url", "image_url": {"url": "mem://"}})
            colour = tuple(rng.randrange(256) for _ in range(3))
            ids, imgs = render_prompt(
                [{"role": "user", "content": content}],
                tokenizer,
                image_processor,
                load_image=lambda _url, c=colour: Image.new("RGB", (32, 32), c),
            )
            rows.append([*ids, rng.choice(answers), eos])
            images += imgs
        input_ids = torch.tensor(rows)
        extra = dict(image_processor(images=images, return_tensors="pt")) if images else {}
        logits = model(
            input_ids=input_ids,
            mm_token_type_ids=mm_token_type_ids(input_ids, model.config.image_token_id),
            **extra,
        ).logits[:, -3:-1]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), input_ids[:, -2:].reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def is_complete(model_dir: Path) -> bool:
    return (model_dir / DONE_MARKER).is_file()


def build_tiny_vlm(out_dir: Path, seed: int = 0) -> Path:
    """Write a complete HF model dir (config, safetensors, tokenizer, preprocessor, DONE) to `out_dir`.

    Idempotent: a dir that already has its DONE marker is reused untouched. The files are written into a
    sibling temp dir that is renamed into place, so `out_dir` is either absent or complete.
    """
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    out_dir = Path(out_dir)
    if is_complete(out_dir):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tokenizer = build_tokenizer()
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(tiny_config(tokenizer))
        format_warmup(model, tokenizer, build_image_processor(), seed)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        build_image_processor().save_pretrained(tmp)
        (tmp / DONE_MARKER).write_text(f"seed={seed}\n")
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not is_complete(out_dir):  # not a lost race with an identical build: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_model(name: str, run_dir: Path, seed: int = 0) -> Path | str:
    """Where to load model `name` from: the built tiny model, a local path, or a hub id returned as is."""
    if name == BUILTIN_TINY:
        return build_tiny_vlm(Path(run_dir) / "model", seed=seed)
    if name.startswith("builtin:"):
        raise ValueError(f"unknown builtin model {name!r}: the only builtin is {BUILTIN_TINY!r}")
    if os.path.isabs(name) or name.startswith("."):
        path = Path(name)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model path {path} has no config.json")
        return path
    return name
