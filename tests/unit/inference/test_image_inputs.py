"""Image URLs at the inference server: odd paths work, bombs are a 400, and rendering never blocks the loop."""

from __future__ import annotations

import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

import rlrun.runtime.inference.server as server_module


def _messages(url: str) -> list[dict]:
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Codeword?"}]
    return [{"role": "user", "content": content}]


def _chat(url: str, image_url: str, timeout: float = 60) -> httpx.Response:
    body = {"model": "tiny", "messages": _messages(image_url), "max_tokens": 2, "seed": 3, "temperature": 0}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=timeout)


def png_header_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


def test_paths_with_spaces_and_percent_signs_and_a_localhost_host_are_served(served, run_tree) -> None:
    path = run_tree[1] / "assets" / "images" / "a red 100% square.png"
    Image.new("RGB", (32, 32), (200, 20, 20)).save(path)
    plain = path.as_uri()  # file:///.../a%20red%20100%25%20square.png
    localhost = f"file://localhost{quote(str(path))}"
    answers = [_chat(served.url, url) for url in (plain, localhost)]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert answers[0].json()["prompt_token_ids"] == answers[1].json()["prompt_token_ids"]
    assert answers[0].json()["choices"][0]["token_ids"] == answers[1].json()["choices"][0]["token_ids"]
    other_host = _chat(served.url, f"file://fileserver{quote(str(path))}")
    assert other_host.status_code == 400 and "host part 'fileserver'" in other_host.json()["error"]["message"]


def test_a_decompression_bomb_is_a_400_naming_the_limit_not_a_500(served, run_tree) -> None:
    bomb = run_tree[1] / "assets" / "images" / "bomb.png"
    bomb.write_bytes(png_header_claiming(30_000, 30_000))
    resp = _chat(served.url, bomb.as_uri())
    assert resp.status_code == 400, resp.text
    assert "exceeds the pixel limit" in resp.json()["error"]["message"]
    not_an_image = run_tree[1] / "assets" / "images" / "notes.png"
    not_an_image.write_bytes(b"plain text")
    resp = _chat(served.url, not_an_image.as_uri())
    assert resp.status_code == 400 and "not an image" in resp.json()["error"]["message"]
    assert httpx.get(f"{served.url}/health", timeout=10).status_code == 200


@pytest.mark.timeout(120)
def test_rendering_runs_off_the_event_loop_so_health_answers_meanwhile(
    served, run_tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spy around the real image loader holds the render until /health has answered (or 10 s pass):
    if rendering ran on the event loop, /health could not answer while it is held."""
    path = run_tree[1] / "assets" / "images" / "slow.png"
    Image.new("RGB", (32, 32), (20, 200, 20)).save(path)
    rendering, health_answered = threading.Event(), threading.Event()
    real_loader = server_module.load_image_url

    def held_loader(url: str, **kwargs: object) -> Image.Image:
        rendering.set()
        health_answered.wait(10)
        return real_loader(url, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(server_module, "load_image_url", held_loader)
    with ThreadPoolExecutor(1) as pool:
        chat = pool.submit(_chat, served.url, path.as_uri())
        assert rendering.wait(30), "the render never started"
        try:
            health = httpx.get(f"{served.url}/health", timeout=5)
        finally:
            health_answered.set()
        assert health.status_code == 200
        assert chat.result(timeout=60).status_code == 200
