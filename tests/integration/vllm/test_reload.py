"""Weight reload on real vLLM through rlrun's launcher: the trainer's export, loaded in place, reported.

The images used before a reload are requested again right after it: on Qwen2-VL a reload without an
encoder-cache reset kills the engine on the next image it saw before ("Encoder cache miss", then
EngineDeadError). Both engines load each version, and must then agree, so a reload that silently skips
tensors (a checkpoint-name mismatch) cannot pass.
"""

from __future__ import annotations

import httpx
import pytest
import torch

from rlrun.runtime.inference.vllm_server import VLLM_WAITING
from rlrun.runtime.trainer.weights import export_weights

# The first test also waits for the session's servers (vLLM: 2-5 min, more on a loaded machine).
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1500)]


def _body(tree, colour: str, **sampling) -> dict:
    return {
        "model": tree.config.model.name,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": tree.images[colour]}},
                    {"type": "text", "text": "Name the codeword."},
                ],
            }
        ],
        "max_tokens": 4,
        "temperature": 0.0,
        "logprobs": True,
        "return_token_ids": True,
        **sampling,
    }


def _greedy(server, tree, colour: str) -> dict:
    body = _body(tree, colour)
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    out = response.json()
    choice = out["choices"][0]
    return {
        "version": out["rlrun_policy_version"],
        "ids": choice["token_ids"],
        "logprobs": [c["logprob"] for c in choice["logprobs"]["content"]],
    }


def _load(server, path, version: int) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/load_weights", json={"path": str(path), "version": version}, timeout=300
    )


def _trainer_state(tree, seed: int | None) -> dict[str, torch.Tensor]:
    """The trainer's state dict (HF module names), perturbed deterministically unless `seed` is None."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tree.model_dir, dtype=torch.float32)
    state = model.state_dict()
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
        for name in sorted(state):
            if state[name].is_floating_point() and state[name].dim() >= 2:
                state[name] = state[name] + 0.5 * torch.randn(state[name].shape, generator=generator)
    return state


def test_reload_changes_greedy_outputs_deterministically_and_survives_cached_images(
    vllm_server, rlrun_server, tree
) -> None:
    colours = list(tree.images)
    before = {c: _greedy(vllm_server, tree, c) for c in colours}  # every image now in the encoder cache
    weights = tree.run_dir / "weights"
    for version, seed in [(1, 1), (2, None)]:  # perturbed, then back to the original weights
        path = export_weights(weights, version, _trainer_state(tree, seed))
        for server in (vllm_server, rlrun_server):
            response = _load(server, path, version)
            assert response.status_code == 200, f"{server.name}: {response.text}"
            assert httpx.get(f"{server.url}/v1/version", timeout=30).json() == {"version": version}
        after = {c: _greedy(vllm_server, tree, c) for c in colours}  # the same images: no engine crash
        again = {c: _greedy(vllm_server, tree, c) for c in colours}
        cpu = {c: _greedy(rlrun_server, tree, c) for c in colours}
        for c in colours:
            assert after[c]["version"] == version
            assert after[c]["ids"] == again[c]["ids"], "greedy decoding after a reload is deterministic"
            assert after[c]["ids"] == cpu[c]["ids"], f"{c}: vLLM and the CPU engine disagree at v{version}"
            torch.testing.assert_close(
                torch.tensor(after[c]["logprobs"]), torch.tensor(cpu[c]["logprobs"]), atol=2e-3, rtol=1e-3
            )
        changed = [c for c in colours if after[c]["logprobs"] != before[c]["logprobs"]]
        if seed is None:
            assert all(after[c]["ids"] == before[c]["ids"] for c in colours), "original weights restored"
        else:
            assert changed == colours, "new weights must change what the engine computes"
    assert httpx.get(f"{vllm_server.url}/health", timeout=30).status_code == 200


def test_reload_while_a_rollout_step_is_in_flight(vllm_server, tree) -> None:
    """The trainer reloads while the next step's groups are generating (maxAsyncSteps >= 1): every request
    must still complete. This failed with HTTP 500 ("Multi-modal cache miss ... cache drift") when the
    reload cleared the engine's mirrored processed-input cache under queued requests."""
    import asyncio

    path = export_weights(tree.run_dir / "weights", 7, _trainer_state(tree, 7))

    async def step() -> list[int]:
        async with httpx.AsyncClient(timeout=600) as client:
            colours = list(tree.images)

            async def group(i: int) -> int:
                body = _body(tree, colours[i % len(colours)], n=8, temperature=1.0, seed=i)
                return (await client.post(f"{vllm_server.url}/v1/chat/completions", json=body)).status_code

            async def reloads() -> int:
                codes = []
                for _ in range(3):
                    await asyncio.sleep(0.2)
                    codes.append(
                        (
                            await client.post(
                                f"{vllm_server.url}/v1/load_weights", json={"path": str(path), "version": 7}
                            )
                        ).status_code
                    )
                return max(codes)

            return await asyncio.gather(*(group(i) for i in range(32)), reloads())

    assert asyncio.run(step()) == [200] * 33
    assert httpx.get(f"{vllm_server.url}/health", timeout=30).status_code == 200


def test_load_weights_refuses_paths_outside_the_run_dir_and_incomplete_exports(
    vllm_server, tree, tmp_path
) -> None:
    outside = tmp_path / "step_9"
    outside.mkdir()
    (outside / "DONE").write_text("")
    (outside / "model.safetensors").write_bytes(b"")
    version = httpx.get(f"{vllm_server.url}/v1/version", timeout=30).json()
    for path, needle in [
        (outside, "outside the run dir"),
        ("weights/../../escape", "outside the run dir"),
        (tree.run_dir / "weights" / "step_404", "no DONE marker"),
    ]:
        response = _load(vllm_server, path, 9)
        assert response.status_code == 400, response.text
        assert needle in response.json()["error"]["message"]
    assert httpx.get(f"{vllm_server.url}/v1/version", timeout=30).json() == version


def test_the_metrics_port_serves_rlrun_figures_next_to_vllm_own(vllm_server, tree) -> None:
    """One port per pod: rlrun's served version and reload latency and vLLM's own metrics together."""
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict[str, float]:
        text = httpx.get(vllm_server.metrics_url, timeout=30).text
        return {
            s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels
        }

    before = scrape()
    path = export_weights(tree.run_dir / "weights", 11, _trainer_state(tree, None))
    response = _load(vllm_server, path, 11)
    assert response.status_code == 200, response.text
    _greedy(vllm_server, tree, "red")
    after = scrape()
    assert after["rlrun_inference_policy_version"] == 11
    assert after["rlrun_inference_reload_seconds_count"] == before["rlrun_inference_reload_seconds_count"] + 1
    assert after["rlrun_inference_completions_total"] >= before["rlrun_inference_completions_total"] + 1
    text = httpx.get(vllm_server.metrics_url, timeout=30).text
    waiting = [
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == VLLM_WAITING
    ]
    assert waiting, "vLLM's queue depth is on the same port"
    assert after["rlrun_inference_queue_depth"] == sum(
        waiting
    )  # ours mirrors vLLM's: same figure, both engines
