"""The inference HTTP contract against a real server and a real tiny model (no mocks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from rlrun.runtime.mm import mm_token_type_ids
from rlrun.runtime.models.chat import render_prompt


def _image(run_dir: Path, color: tuple[int, int, int]) -> str:
    path = run_dir / "assets" / "images" / f"{color[0]:02x}{color[1]:02x}{color[2]:02x}.png"
    Image.new("RGB", (32, 32), color).save(path)
    return path.as_uri()


def _messages(url: str, text: str = "What is the codeword for this colour?") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
        }
    ]


def _chat(url: str, messages: list[dict], **kw: object) -> httpx.Response:
    body = {"model": "tiny", "messages": messages, "logprobs": True, "max_tokens": 4, **kw}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def test_health_and_version(served) -> None:
    assert httpx.get(f"{served.url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{served.url}/v1/version", timeout=10).json() == {"version": served.engine.version}


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_a_plain_forward_and_ids_decode_to_the_text(served, run_tree, temperature) -> None:
    """Logprobs are of the sampled distribution, log_softmax(logits / T): what the trainer recomputes."""
    messages = _messages(_image(run_tree[1], (255, 0, 0)))
    out = _chat(served.url, messages, n=3, seed=11, temperature=temperature).json()
    engine = served.engine
    prompt_ids, images = render_prompt(messages, engine.tokenizer, engine.image_processor)
    assert out["prompt_token_ids"] == prompt_ids
    assert out["rlrun_policy_version"] == engine.version
    assert len(out["choices"]) == 3
    pixels = engine.image_processor(images=images, return_tensors="pt")
    for choice in out["choices"]:
        ids = choice["token_ids"]
        assert 1 <= len(ids) <= 4
        assert choice["message"]["content"] == engine.tokenizer.decode(ids, skip_special_tokens=True)
        full = torch.tensor([prompt_ids + ids])
        with torch.inference_mode():
            logits = engine.model(
                input_ids=full, mm_token_type_ids=mm_token_type_ids(full, engine.image_token_id), **pixels
            ).logits
        expected = torch.log_softmax(logits[0, len(prompt_ids) - 1 : -1].float() / temperature, -1)[
            torch.arange(len(ids)), ids
        ]
        got = torch.tensor([c["logprob"] for c in choice["logprobs"]["content"]])
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert len({tuple(c["token_ids"]) for c in out["choices"]}) > 1, "n choices must be sampled independently"


def test_concurrent_requests_are_batched_and_match_sequential_results(served, run_tree) -> None:
    urls = [_image(run_tree[1], c) for c in [(0, 255, 0), (0, 0, 255), (255, 255, 0)]]
    calls = [(_messages(urls[i % 3], "Colour?" + "?" * i), 100 + i) for i in range(6)]
    calls.append(([{"role": "user", "content": "a text-only prompt"}], 200))
    sequential = [_chat(served.url, m, n=2, seed=s).json() for m, s in calls]
    before = _stats(served.url)
    with ThreadPoolExecutor(len(calls)) as pool:
        concurrent = list(pool.map(lambda c: _chat(served.url, c[0], n=2, seed=c[1]).json(), calls))
    after = _stats(served.url)
    assert after["requests"] - before["requests"] == len(calls)
    assert after["batches"] - before["batches"] < len(calls), "concurrent requests were not batched"
    assert after["max_batch_requests"] > 1
    for seq, con in zip(sequential, concurrent, strict=True):
        for a, b in zip(seq["choices"], con["choices"], strict=True):
            assert a["token_ids"] == b["token_ids"]
            la = [c["logprob"] for c in a["logprobs"]["content"]]
            lb = [c["logprob"] for c in b["logprobs"]["content"]]
            assert la == pytest.approx(lb, abs=1e-4)


def _stats(url: str) -> dict:
    return httpx.get(f"{url}/v1/stats", timeout=10).json()


def _export(run_dir: Path, step: int, state: dict[str, torch.Tensor]) -> Path:
    out = run_dir / "weights" / f"step_{step}"
    out.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    (out / "DONE").write_text("")
    return out


def test_load_weights_changes_outputs_and_version(served, run_tree, tiny_model) -> None:
    run_dir = run_tree[1]
    messages = _messages(_image(run_dir, (255, 0, 255)))
    greedy = dict(n=1, temperature=0.0, max_tokens=3)
    original = _chat(served.url, messages, **greedy).json()["choices"][0]
    state = {k: v.clone() for k, v in served.engine.model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state["lm_head.weight"] = torch.randn(state["lm_head.weight"].shape, generator=generator)
    path = _export(run_dir, 1, state)
    assert httpx.post(
        f"{served.url}/v1/load_weights", json={"path": str(path), "version": 1}, timeout=60
    ).json() == {"version": 1}
    assert httpx.get(f"{served.url}/v1/version", timeout=10).json() == {"version": 1}
    changed = _chat(served.url, messages, **greedy).json()
    assert changed["rlrun_policy_version"] == 1
    assert changed["choices"][0]["logprobs"] != original["logprobs"]
    # save_pretrained's legacy tensor names load too: back to the original weights, as version 2.
    legacy = _export(run_dir, 2, {})
    (legacy / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
    rel = os.path.relpath(legacy, run_dir)
    assert (
        httpx.post(f"{served.url}/v1/load_weights", json={"path": rel, "version": 2}, timeout=60).status_code
        == 200
    )
    restored = _chat(served.url, messages, **greedy).json()
    assert restored["choices"][0]["token_ids"] == original["token_ids"]
    assert restored["rlrun_policy_version"] == 2


def test_load_weights_refuses_paths_outside_the_run_dir_and_incomplete_exports(
    served, run_tree, tmp_path
) -> None:
    outside = tmp_path / "step_9"
    outside.mkdir()
    (outside / "DONE").write_text("")
    version = httpx.get(f"{served.url}/v1/version", timeout=10).json()
    for path, needle in [
        (str(outside), "outside the run dir"),
        ("weights/../../escape", "outside the run dir"),
        (str(run_tree[1] / "weights" / "step_404"), "no DONE marker"),
    ]:
        resp = httpx.post(f"{served.url}/v1/load_weights", json={"path": path, "version": 9}, timeout=30)
        assert resp.status_code == 400, resp.text
        assert needle in resp.json()["error"]["message"]
    assert httpx.get(f"{served.url}/v1/version", timeout=10).json() == version


def test_image_urls_outside_the_asset_root_are_rejected_naming_the_url(served, run_tree, tmp_path) -> None:
    foreign = tmp_path / "foreign.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(foreign)
    link = run_tree[1] / "assets" / "images" / "link.png"
    link.symlink_to(foreign)
    for url in [foreign.as_uri(), link.as_uri(), "data:image/png;base64,AAAA", "http://example.com/a.png"]:
        resp = _chat(served.url, _messages(url))
        assert resp.status_code == 400, url
        assert url[:60] in resp.json()["error"]["message"]


def test_malformed_requests_are_400_with_the_field(served) -> None:
    resp = httpx.post(f"{served.url}/v1/chat/completions", json={"messages": [], "n": 0}, timeout=10)
    assert resp.status_code == 400
    assert "messages" in resp.json()["error"]["message"] and "n:" in resp.json()["error"]["message"]


@pytest.mark.timeout(120)
def test_console_entry_point_serves_on_a_free_port(tmp_path, tiny_model) -> None:
    """`python -m rlrun.runtime.inference` with a config file: ready file, /health, SIGTERM exits 0; started
    mid-run (an export on the volume), it serves the run's latest weights, not version 0."""
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"runId": "cli", "assetRoot": str(tmp_path), "model": {"name": str(tiny_model)}})
    )
    for step in (2, 3):
        _export(tmp_path / "run_cli", step, {}).joinpath("model.safetensors").write_bytes(
            (tiny_model / "model.safetensors").read_bytes()
        )
    (tmp_path / "run_cli" / "weights" / "step_4").mkdir()  # an export still being written: no DONE
    ready = tmp_path / "ready.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [
        sys.executable,
        "-m",
        "rlrun.runtime.inference",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--ready-file",
        str(ready),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not ready.exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        url = json.loads(ready.read_text())["url"]
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        assert httpx.get(f"{url}/v1/version", timeout=10).json() == {"version": 3}
        out = httpx.post(
            f"{url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            timeout=30,
        )
        assert out.status_code == 200 and out.json()["choices"][0]["token_ids"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
