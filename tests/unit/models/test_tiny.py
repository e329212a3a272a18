"""The offline tiny VLM: complete, reusable, loadable by the standard classes, and consistent with rendering."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

from rlrun.runtime.mm import mm_token_type_ids
from rlrun.runtime.models.chat import render_prompt
from rlrun.runtime.models.tiny import (
    BUILTIN_TINY,
    SPECIAL_TOKENS,
    WARMUP_ANSWERS,
    WORD_TOKENS,
    build_tiny_vlm,
    resolve_model,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "model")


def test_build_writes_a_complete_dir_and_is_reused(model_dir: Path) -> None:
    names = {p.name for p in model_dir.iterdir()}
    expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert expected | {"preprocessor_config.json", "DONE"} <= names
    mtime = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_vlm(model_dir) == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == mtime
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_vl"
    assert config["text_config"]["hidden_size"] == 64 and config["vision_config"]["depth"] == 1
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".")], "temp dir left behind"
    assert (model_dir / "DONE").read_text() == "seed=0\n"


def test_warmup_teaches_the_answer_format_not_the_answer(model_dir: Path) -> None:
    """After the build the warm-up words + <|im_end|> dominate, near uniform and the same for every image:
    the policy starts at the image-blind ceiling (1/4 with 4 colours), not above it and not at zero."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    processor = AutoImageProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    answers = [tok.convert_tokens_to_ids(w) for w in WARMUP_ANSWERS]
    firsts = []
    for colour in [(230, 25, 25), (25, 200, 40), (30, 60, 230), (10, 10, 10)]:
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Codeword?"},  # the built-in colour task's prompt
                    {"type": "image_url", "image_url": {"url": "mem://"}},
                ],
            }
        ]
        ids, images = render_prompt(
            messages, tok, processor, load_image=lambda _u, c=colour: Image.new("RGB", (32, 32), c)
        )
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            logits = model(
                input_ids=input_ids,
                mm_token_type_ids=mm_token_type_ids(input_ids, model.config.image_token_id),
                **processor(images=images, return_tensors="pt"),
            ).logits
        firsts.append(logits[0, -1].softmax(-1)[answers])
    for p in firsts:
        assert p.sum() > 0.8, f"the answer format (one of {WARMUP_ANSWERS}) was not learned: {p}"
        assert p.max() < 0.45, f"one word dominates: the warm-up must leave the policy near uniform: {p}"
    spread = (torch.stack(firsts) - firsts[0]).abs().max()
    assert spread < 0.05, f"answer probabilities already depend on the image (max diff {spread:.3f})"


def test_concurrent_builders_leave_one_complete_dir(tmp_path: Path) -> None:
    target = tmp_path / "run" / "model"
    errors: list[BaseException] = []

    def build() -> None:
        try:
            build_tiny_vlm(target)
        except BaseException as err:  # collected and re-raised by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and (target / "DONE").is_file()
    assert os.listdir(target.parent) == ["model"]


def test_resolve_model(tmp_path: Path, model_dir: Path) -> None:
    shutil.copytree(model_dir, tmp_path / "run_x" / "model")
    assert resolve_model(BUILTIN_TINY, tmp_path / "run_x") == tmp_path / "run_x" / "model"
    assert resolve_model(str(model_dir), tmp_path) == model_dir
    assert resolve_model("Qwen/Qwen2-VL-2B-Instruct", tmp_path) == "Qwen/Qwen2-VL-2B-Instruct"
    with pytest.raises(ValueError, match="unknown builtin model 'builtin:huge'"):
        resolve_model("builtin:huge", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        resolve_model(str(tmp_path / "missing"), tmp_path)


def test_tokenizer_is_byte_level_with_single_token_words(model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(model_dir)
    text = "héllo ✓ alphabet <|im_end|> zulu"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    for word in (*SPECIAL_TOKENS, *WORD_TOKENS):
        assert len(tok.encode(word, add_special_tokens=False)) == 1, word
    assert len(tok.encode("alphabet", add_special_tokens=False)) == 8, "words inside longer words stay bytes"
    assert tok.eos_token == "<|im_end|>"


def test_render_prompt_matches_the_processor_and_the_model_runs(model_dir: Path, tmp_path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(model_dir)
    processor = AutoImageProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    for i, size in enumerate([(32, 32), (56, 56), (200, 90)]):
        Image.new("RGB", size, (i * 80, 10, 10)).save(tmp_path / f"{i}.png")
    content = [
        {"type": "image_url", "image_url": {"url": (tmp_path / f"{i}.png").as_uri()}} for i in range(3)
    ]
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [*content, {"type": "text", "text": "?"}]},
    ]
    ids, images = render_prompt(messages, tok, processor)
    pixels = processor(images=images, return_tensors="pt")
    per_image = (pixels["image_grid_thw"].prod(-1) // processor.merge_size**2).tolist()
    assert per_image[:2] == [4, 4], "tiny images are 4 tokens"
    assert ids.count(model.config.image_token_id) == sum(per_image)
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")
    input_ids = torch.tensor([ids])
    logits = model(
        input_ids=input_ids,
        mm_token_type_ids=mm_token_type_ids(input_ids, model.config.image_token_id),
        **pixels,
    ).logits
    assert logits.shape == (1, len(ids), len(tok)) and torch.isfinite(logits).all()


def test_render_prompt_refuses_unknown_parts_and_roles(model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(model_dir)
    processor = AutoImageProcessor.from_pretrained(model_dir)
    with pytest.raises(ValueError, match="role 'narrator'"):
        render_prompt([{"role": "narrator", "content": "x"}], tok, processor)
    with pytest.raises(ValueError, match="part type 'audio'"):
        render_prompt([{"role": "user", "content": [{"type": "audio"}]}], tok, processor)
