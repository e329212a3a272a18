"""Offload of untrusted environment messages: host files, non-images, bombs and crash leftovers are refused.

An environment's messages decide what the env-worker copies into the asset tree, and that tree is later
re-inlined into uploaded sample parquets: a `file://` URL that reaches `/etc/passwd` would put a secret
from the pod into the bucket. Each refusal is a per-part error; the other parts of the batch still go.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from rlrun.runtime.assets import RunTree, offload_images, write_content_addressed

SECRET = b"AWS_SECRET_ACCESS_KEY=do-not-upload\n"


def png_bytes(color: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A valid PNG header announcing `width` x `height` pixels over a few bytes: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def image_part(url: object) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def stored(tree: RunTree) -> list[Path]:
    """Regular files under images/ (a planted symlink is not one)."""
    return sorted(p for p in tree.images_dir.iterdir() if p.is_file() and not p.is_symlink())


@pytest.fixture
def tree(tmp_path: Path) -> RunTree:
    return RunTree(tmp_path / "outputs", "r1").ensure()


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "pod-secrets" / "env.png"  # an image suffix does not make it an allowed source
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def _refused_urls(tree: RunTree, secret: Path) -> dict[str, str]:
    link = tree.images_dir / "planted.png"
    link.symlink_to(secret)
    up = "/".join([".."] * len(tree.images_dir.parts))
    return {
        "etc-passwd": "file:///etc/passwd",
        "proc-environ": "file:///proc/self/environ",
        "dotdot": f"file://{tree.images_dir}/{up}{secret}",
        "percent-dotdot": f"file://{tree.images_dir}/{up.replace('..', '%2e%2e')}{secret}",
        "symlink-in-images": link.as_uri(),
        "localhost-etc": "file://localhost/etc/passwd",
    }


def test_file_urls_outside_the_allowed_roots_are_refused_and_nothing_is_copied(
    tree: RunTree, secret: Path
) -> None:
    urls = _refused_urls(tree, secret)
    good = png_bytes()
    messages = [
        {"role": "user", "content": [*(image_part(u) for u in urls.values()), image_part(data_url(good))]}
    ]
    result = offload_images(messages, tree.images_dir)
    content = result.value[0]["content"]
    assert [part["image_url"]["url"] for part in content[:-1]] == list(urls.values())  # left as they were
    assert [e.where for e in result.errors] == [f"[0].content[{i}].image_url.url" for i in range(len(urls))]
    assert all("outside the allowed roots" in e.reason for e in result.errors), result.errors
    assert result.written == 1 and [p.read_bytes() for p in stored(tree)] == [good]
    assert not any(SECRET in p.read_bytes() for p in stored(tree))


def test_symlinks_out_of_a_dataset_root_are_refused_and_files_inside_are_copied(
    tree: RunTree, secret: Path, tmp_path: Path
) -> None:
    dataset = tmp_path / "dataset"
    (dataset / "train").mkdir(parents=True)
    inside = dataset / "train" / "cat 1%.png"  # spaces and percent signs are ordinary path characters
    inside.write_bytes(png_bytes((1, 2, 3)))
    (dataset / "train" / "escape.png").symlink_to(secret)
    (dataset / "up").symlink_to(secret.parent, target_is_directory=True)
    urls = [
        inside.as_uri(),
        (dataset / "train" / "escape.png").as_uri(),
        (dataset / "up" / "env.png").as_uri(),
    ]
    result = offload_images([image_part(u) for u in urls], tree.images_dir, source_roots=[dataset])
    assert [e.where for e in result.errors] == ["[1].image_url.url", "[2].image_url.url"]
    assert result.written == 1 and [p.read_bytes() for p in stored(tree)] == [inside.read_bytes()]


def test_a_fifo_in_an_allowed_root_is_refused_without_blocking(tree: RunTree, tmp_path: Path) -> None:
    fifo = tmp_path / "dataset" / "pipe.png"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    result = offload_images([image_part(fifo.as_uri())], tree.images_dir, source_roots=[fifo.parent])
    assert result.written == 0 and "not a regular file" in result.errors[0].reason


def test_non_images_and_empty_files_are_refused_per_part(tree: RunTree, tmp_path: Path) -> None:
    text = tmp_path / "dataset" / "notes.png"
    text.parent.mkdir()
    text.write_bytes(b"just some text, not pixels")
    empty = tmp_path / "dataset" / "empty.png"
    empty.write_bytes(b"")
    planted = tree.images_dir / "0123456789abcdef.png"  # a non-image already under images/
    planted.write_bytes(SECRET)
    good = png_bytes((0, 0, 255))
    parts = [
        image_part(data_url(b"hello, I am text", "image/png")),  # declared PNG, text bytes
        {"type": "image", "image": b""},
        {"type": "image", "image": b"GIF89a but not really"},
        image_part(text.as_uri()),
        image_part(empty.as_uri()),
        image_part(planted.as_uri()),
        image_part(data_url(good)),
    ]
    result = offload_images(parts, tree.images_dir, source_roots=[text.parent])
    reasons = {e.where: e.reason for e in result.errors}
    assert list(reasons) == [
        "[0].image_url.url",
        "[1].image",
        "[2].image",
        "[3].image_url.url",
        "[4].image_url.url",
        "[5].image_url.url",
    ]
    assert "not an image" in reasons["[0].image_url.url"] and "empty" in reasons["[1].image"]
    assert "empty" in reasons["[4].image_url.url"] and "not an image" in reasons["[5].image_url.url"]
    assert result.written == 1
    assert sorted(p.read_bytes() for p in stored(tree)) == sorted([good, SECRET])  # only the planted one


def test_decompression_bombs_are_a_per_part_error_never_an_exception(tree: RunTree) -> None:
    bomb = png_header_claiming(30_000, 30_000)  # 900 Mpx in 100 bytes
    parts = [image_part(data_url(bomb)), {"type": "image", "image": bomb}, image_part(data_url(png_bytes()))]
    result = offload_images(parts, tree.images_dir)
    assert [e.where for e in result.errors] == ["[0].image_url.url", "[1].image"]
    assert all("pixel" in e.reason for e in result.errors), result.errors
    assert result.written == 1


def test_the_pixel_limit_is_configurable_and_applies_to_every_kind_of_part(tree: RunTree) -> None:
    big = png_bytes(size=(20, 20))  # 400 pixels
    parts = [
        image_part(data_url(big)),
        {"type": "image", "image": Image.new("RGB", (20, 20))},
        image_part(data_url(png_bytes(size=(10, 10)))),
    ]
    result = offload_images(parts, tree.images_dir, max_pixels=100)
    assert [e.where for e in result.errors] == ["[0].image_url.url", "[1].image"]
    assert all("20x20 = 400 pixels exceeds the limit of 100" in e.reason for e in result.errors)
    assert result.written == 1


# ------------------------------------------------------------------------- content-addressed writes


@pytest.mark.parametrize("leftover", [b"", b"\x89PNG\r\n\x1a\n\x00\x00"], ids=["empty", "truncated"])
def test_a_crash_leftover_under_the_hash_name_is_replaced_not_trusted(tree: RunTree, leftover: bytes) -> None:
    data = png_bytes((3, 4, 5))
    path = tree.images_dir / f"{hashlib.sha256(data).hexdigest()[:16]}.png"
    path.write_bytes(leftover)  # what a writer killed before its data reached the disk leaves behind
    assert write_content_addressed(tree.images_dir, data, ".png") == path
    assert path.read_bytes() == data
    path.write_bytes(leftover)
    result = offload_images([image_part(data_url(data))], tree.images_dir)  # the env-worker's path
    assert result.errors == [] and path.read_bytes() == data


def test_content_addressed_writes_are_fsynced_before_the_rename_and_the_directory_after(
    tree: RunTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:  # a spy: the real call still happens
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_content_addressed(tree.images_dir, png_bytes(), ".png")
    assert events == ["fsync-file", "rename", "fsync-dir"]
