"""An environment whose messages carry hostile images: the real env-worker refuses each one by name (502
to the orchestrator, never a 500 or a crash), copies nothing from the host, and keeps serving."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import httpx
import pytest

from rlrun.runtime.envs.base import Environment, Example
from rlrun.runtime.envs.server import create_app
from rlrun.runtime.envs.worker import RolloutWorker, image_token_id
from rlrun.runtime.mm import load_image_processor

SECRET = b"API_TOKEN=never-upload-me\n"


def png_header_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


def data_url(data: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(data).decode()}"


class HostileImages(Environment):
    """A test environment: example i shows image URL i (what a buggy or malicious environment could send)."""

    id = "hostile-images"

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls

    def __len__(self) -> int:
        return len(self.urls)

    def make_example(self, index: int) -> Example:
        content = [
            {"type": "text", "text": "Codeword?"},
            {"type": "image_url", "image_url": {"url": self.urls[index]}},
        ]
        return Example(f"hostile-{index}", [{"role": "user", "content": content}], "alpha")

    def reward(self, example: Example, completion: str) -> float:
        return 0.0


@pytest.fixture
def hostile(color_stack, loop_thread, tmp_path: Path) -> str:
    secret = tmp_path / "secret.png"
    secret.write_bytes(SECRET)
    link = color_stack.images_dir / "planted.png"
    link.unlink(missing_ok=True)
    link.symlink_to(secret)
    urls = [
        "file:///etc/passwd",
        link.as_uri(),
        f"file://{color_stack.images_dir}/../../../..{secret}",
        data_url(png_header_claiming(30_000, 30_000)),
        data_url(b"not an image at all"),
    ]
    model = color_stack.config.model.name
    env = HostileImages(urls)

    def make(client: httpx.AsyncClient) -> RolloutWorker:
        return RolloutWorker(
            env,
            [color_stack.inference_url],
            client,
            color_stack.images_dir,
            load_image_processor(model),
            image_token_id(model),
        )

    return loop_thread.serve(create_app(make))


@pytest.mark.parametrize(
    ("index", "reason"),
    [
        (0, "outside the allowed roots"),
        (1, "outside the allowed roots"),
        (2, "outside the allowed roots"),
        (3, "exceeds the pixel limit"),
        (4, "not an image"),
    ],
    ids=["etc-passwd", "symlink-in-images", "dotdot", "bomb", "text-as-png"],
)
def test_each_hostile_image_is_refused_by_name_and_nothing_is_copied(
    hostile, color_stack, index, reason
) -> None:
    url = hostile
    body = {"example_index": index, "group_size": 2, "sampling": {"max_tokens": 1}}
    resp = httpx.post(f"{url}/v1/rollouts", json=body, timeout=60)
    assert resp.status_code == 502, resp.text
    message = resp.json()["error"]["message"]
    assert f"hostile-{index}: image(s) refused" in message and reason in message, message
    stored = [p for p in color_stack.images_dir.iterdir() if p.is_file() and not p.is_symlink()]
    assert not any(SECRET in p.read_bytes() or b"root:" in p.read_bytes() for p in stored)
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
