"""A real env-worker in front of a real inference server: refs not pixels, offload once, right rewards."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

import httpx

from rlrun.runtime.assets import uri_to_path
from rlrun.runtime.envs.builtin.color_codeword import ColorCodeword, first_word


def _rollouts(url: str, index: int, group: int = 4, **sampling: object) -> httpx.Response:
    body = {
        "example_index": index,
        "group_size": group,
        "sampling": {"temperature": 1.0, "max_tokens": 2, **sampling},
    }
    return httpx.post(f"{url}/v1/rollouts", json=body, timeout=120)


def test_color_rollouts_carry_file_refs_and_each_image_is_offloaded_once(color_stack) -> None:
    resp = _rollouts(color_stack.env_url, 1, group=4, seed=5)
    assert resp.status_code == 200, resp.text
    assert "base64" not in resp.text and "data:image" not in resp.text
    rollouts = resp.json()["rollouts"]
    assert len(rollouts) == 4
    env = ColorCodeword(num_colours=4)
    example = env.example(1)
    for r in rollouts:
        assert r["env"] == "color-codeword" and r["example_id"] == example.example_id
        assert r["policy_version"] == color_stack.engine.version
        assert len(r["completion_ids"]) == len(r["completion_logprobs"]) <= 2
        assert r["reward"] == (1.0 if first_word(r["completion"]) == example.answer else 0.0)
        assert r["mm"]["descriptor"]["mm_items"]["image"] == [{"image_grid_thw": [[1, 4, 4]]}]
        ((offset, length),) = r["mm"]["descriptor"]["mm_placeholders"]["image"]
        assert length == 4 and r["prompt_ids"][offset : offset + 4] == [color_stack.engine.image_token_id] * 4
    (uri,) = rollouts[0]["mm"]["uris"]
    path = uri_to_path(uri)
    assert path.parent == color_stack.images_dir.resolve()
    assert path.name == hashlib.sha256(path.read_bytes()).hexdigest()[:16] + ".png"
    assert rollouts[0]["prompt"][0]["content"][1] == {"type": "image_url", "image_url": {"url": uri}}
    assert rollouts[0]["mm"]["descriptor"]["mm_hashes"]["image"] == [path.stem]
    # Every group of every example, concurrently: one file per distinct colour, never a copy.
    with ThreadPoolExecutor(8) as pool:
        assert all(
            r.status_code == 200 for r in pool.map(lambda i: _rollouts(color_stack.env_url, i), range(8))
        )
    files = sorted(p.name for p in color_stack.images_dir.iterdir())
    assert len(files) == 4 and all(not f.startswith(".") for f in files)


def test_same_seed_gives_the_same_group(color_stack) -> None:
    a = _rollouts(color_stack.env_url, 2, seed=9).json()["rollouts"]
    b = _rollouts(color_stack.env_url, 2, seed=9).json()["rollouts"]
    assert [r["completion_ids"] for r in a] == [r["completion_ids"] for r in b]


def test_text_rollouts_have_no_mm_and_score_position_matches(text_stack) -> None:
    rollouts = _rollouts(text_stack.env_url, 3, group=3, max_tokens=4).json()["rollouts"]
    assert [r["mm"] for r in rollouts] == [None, None, None]
    assert all(isinstance(r["prompt"][0]["content"], str) for r in rollouts)
    assert all(0.0 <= r["reward"] <= 1.0 for r in rollouts)
    assert not list(text_stack.images_dir.iterdir())


def test_bad_requests_are_400(color_stack) -> None:
    assert (
        httpx.post(f"{color_stack.env_url}/v1/rollouts", json={"group_size": 2}, timeout=10).status_code
        == 400
    )
    resp = _rollouts(color_stack.env_url, 0, temperature=-1)
    assert resp.status_code == 400 and "temperature" in resp.text
    assert httpx.get(f"{color_stack.env_url}/health", timeout=10).json()["env"] == "color-codeword"


def test_a_dead_inference_server_is_a_502_naming_it(color_stack, loop_thread) -> None:
    import socket

    from rlrun.runtime.envs.server import create_app, worker_factory

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    from prometheus_client import REGISTRY

    errors = REGISTRY.get_sample_value("rlrun_env_rollout_errors_total") or 0.0
    env_url = loop_thread.serve(create_app(worker_factory(color_stack.config, [dead])))
    resp = _rollouts(env_url, 0)
    assert resp.status_code == 502 and dead in resp.text
    assert REGISTRY.get_sample_value("rlrun_env_rollout_errors_total") == errors + 1
    assert REGISTRY.get_sample_value("rlrun_env_rollouts_in_flight") == 0


def test_image_blind_ceiling_holds_by_construction() -> None:
    """Every example has the same text; any fixed answer scores exactly 1/num_colours on average."""
    for n in (2, 4, 7):
        env = ColorCodeword(num_colours=n, seed=3)
        examples = [env.example(i) for i in range(len(env))]
        texts = {json.dumps([p for p in e.messages[0]["content"] if p["type"] == "text"]) for e in examples}
        assert len(texts) == 1
        assert len({e.answer for e in examples}) == n
        for answer in {e.answer for e in examples} | {"nonsense"}:
            mean = sum(env.reward(e, answer) for e in examples) / n
            assert mean <= 1 / n


def test_a_replica_behind_the_required_policy_version_gets_no_rollouts(color_stack, loop_thread, tiny_model):
    """Two real inference replicas: one reloaded to version 1, one still at 0 (restarted, not yet reloaded).
    Rollouts that need version >= 1 come from the current replica only; with only the stale one, a 502
    names it and its version instead of training on its samples."""
    from rlrun.runtime.envs.server import create_app, worker_factory
    from rlrun.runtime.inference.engine import Engine
    from rlrun.runtime.inference.server import ServerSettings
    from rlrun.runtime.inference.server import create_app as create_inference_app
    from rlrun.runtime.trainer.weights import export_weights

    config = color_stack.config
    current, stale = Engine(tiny_model), Engine(tiny_model)
    current.load_weights(export_weights(config.run_dir / "weights", 1, current.model.state_dict()), 1)
    settings = ServerSettings(asset_root=config.run_dir.parent, run_dir=config.run_dir, model_name="tiny")
    urls = [loop_thread.serve(create_inference_app(e, settings)) for e in (stale, current)]
    both = loop_thread.serve(create_app(worker_factory(config, urls)))
    only_stale = loop_thread.serve(create_app(worker_factory(config, urls[:1])))
    for index in range(3):  # round robin would hand every other group to the stale replica
        resp = httpx.post(
            f"{both}/v1/rollouts",
            json={
                "example_index": index,
                "group_size": 2,
                "min_policy_version": 1,
                "sampling": {"max_tokens": 2},
            },
            timeout=120,
        )
        assert resp.status_code == 200, resp.text
        assert {r["policy_version"] for r in resp.json()["rollouts"]} == {1}
    resp = httpx.post(
        f"{only_stale}/v1/rollouts",
        json={"example_index": 0, "group_size": 2, "min_policy_version": 1},
        timeout=120,
    )
    assert resp.status_code == 502 and urls[0] in resp.text and "policy version >= 1" in resp.text
