"""The run asset tree: ids, traversal safety, content-addressed writes, message offload, the feature sweep."""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import os
import threading
from pathlib import Path

import pytest
from PIL import Image
from pydantic import BaseModel, ConfigDict

from rlrun.runtime.assets import (
    OffloadResult,
    PathEscapeError,
    RunTree,
    extension_for,
    offload_images,
    resolve_inside,
    uri_to_path,
    write_content_addressed,
    write_image,
)
from rlrun.runtime.config import RuntimeConfig


def png_bytes(color: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def image_part(url: object) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def name_of(data: bytes, ext: str) -> str:
    return hashlib.sha256(data).hexdigest()[:16] + ext


@pytest.fixture
def tree(tmp_path: Path) -> RunTree:
    return RunTree(tmp_path / "outputs", "r1").ensure()


# ---------------------------------------------------------------------------------------------- RunTree


def test_run_tree_layout(tmp_path: Path) -> None:
    tree = RunTree(tmp_path, "abc-1.2_x").ensure()
    assert tree.run_dir == tmp_path.resolve() / "run_abc-1.2_x"
    assert tree.images_dir == tree.run_dir / "assets" / "images"
    for path in (
        tree.images_dir,
        tree.rollouts_dir,
        tree.checkpoints_dir,
        tree.weights_dir,
    ):
        assert path.is_dir()


def test_run_tree_root_is_always_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    tree = RunTree("rel/out", "r")
    assert tree.root.is_absolute() and tree.root == tmp_path.resolve() / "rel" / "out"
    assert tree.images_dir.as_uri().startswith("file:///")


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "a b", "x\x00", "/abs", "é"])
def test_run_tree_refuses_unsafe_run_ids(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="RUN_ID"):
        RunTree(tmp_path, bad)


def test_child_ids_are_validated(tree: RunTree) -> None:
    assert tree.child("rollouts", "step_3") == tree.run_dir / "rollouts" / "step_3"
    with pytest.raises(ValueError, match="not a safe id"):
        tree.child("rollouts", "..")


def test_from_env(tmp_path: Path) -> None:
    tree = RunTree.from_env({"RUN_ID": "job-7", "RLRUN_ASSET_ROOT": str(tmp_path)})
    assert tree.run_dir == tmp_path.resolve() / "run_job-7"
    assert RunTree.from_env({"RUN_ID": "job-7"}).root == Path("/data/outputs")
    with pytest.raises(RuntimeError, match="RUN_ID is not set"):
        RunTree.from_env({})
    with pytest.raises(RuntimeError, match="not a safe id"):
        RunTree.from_env({"RUN_ID": "../../etc"})


# -------------------------------------------------------------------------------------- traversal


def test_uri_to_path_refuses_relative_style_uris() -> None:
    assert uri_to_path("file:///data/a%20b.png") == Path("/data/a b.png")
    with pytest.raises(ValueError, match="host part"):
        uri_to_path("file://rel/assets/images/x.png")
    with pytest.raises(ValueError, match="not a file"):
        uri_to_path("http://example.com/x.png")


def test_resolve_inside_accepts_refs_under_base(tree: RunTree) -> None:
    target = tree.images_dir / "a.png"
    assert resolve_inside(tree.run_dir, "assets/images/a.png") == target
    assert resolve_inside(tree.run_dir, str(target)) == target
    assert resolve_inside(tree.run_dir, target.as_uri()) == target
    assert resolve_inside(tree.run_dir, "assets/../assets/images/a.png") == target


@pytest.mark.parametrize(
    "ref",
    [
        "../run_other/x.png",
        "assets/../../x",
        "/etc/passwd",
        "file:///etc/passwd",
        "assets/images/../../../x",
        "a\x00b",
    ],
)
def test_resolve_inside_refuses_escapes(tree: RunTree, ref: str) -> None:
    with pytest.raises(PathEscapeError):
        resolve_inside(tree.run_dir, ref)


def test_resolve_inside_refuses_symlinks_out(tree: RunTree, tmp_path: Path) -> None:
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"x")
    (tree.images_dir / "link.png").symlink_to(outside)
    (tree.images_dir / "dirlink").symlink_to(tmp_path)
    for ref in (
        "assets/images/link.png",
        (tree.images_dir / "link.png").as_uri(),
        "assets/images/dirlink/secret.png",
    ):
        with pytest.raises(PathEscapeError, match="outside"):
            resolve_inside(tree.run_dir, ref)
    inside = tree.images_dir / "real.png"
    inside.write_bytes(b"y")
    (tree.images_dir / "alias.png").symlink_to(inside)
    assert resolve_inside(tree.run_dir, "assets/images/alias.png") == inside


# ------------------------------------------------------------------------------- content-addressed writes


@pytest.mark.parametrize(
    ("media_type", "ext"),
    [
        ("image/jpeg", ".jpg"),
        ("image/jpg", ".jpg"),
        ("image/JPEG", ".jpg"),
        ("image/png", ".png"),
        ("image/webp", ".webp"),
        ("image/gif", ".gif"),
        ("image/bmp", ".img"),
        ("image/png;charset=x", ".png"),
        ("", ".img"),
    ],
)
def test_extension_for(media_type: str, ext: str) -> None:
    assert extension_for(media_type) == ext


def test_write_image_names_by_content_and_refreshes_mtime(tree: RunTree) -> None:
    data = png_bytes()
    path = write_image(tree.images_dir, data, "image/png")
    assert path == tree.images_dir / name_of(data, ".png") and path.read_bytes() == data
    os.utime(path, (1_000_000, 1_000_000))
    assert write_image(tree.images_dir, data, "image/png") == path
    assert path.stat().st_mtime > 1_000_000 and path.read_bytes() == data
    assert sorted(p.name for p in tree.images_dir.iterdir()) == [path.name]  # no temp files left


def test_write_image_from_pil_is_png(tree: RunTree) -> None:
    path = write_image(tree.images_dir, Image.new("RGB", (4, 4), (1, 2, 3)), "image/png")
    assert path.suffix == ".png"
    with Image.open(path) as img:
        assert img.getpixel((0, 0)) == (1, 2, 3)
    assert path.stem == hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_concurrent_writers_of_identical_content(tree: RunTree) -> None:
    data = os.urandom(256 * 1024)
    barrier = threading.Barrier(8)
    paths: list[Path] = []

    def writer() -> None:
        barrier.wait(timeout=10)
        for _ in range(20):
            paths.append(write_content_addressed(tree.images_dir, data, ".bin"))
            (tree.images_dir / name_of(data, ".bin")).unlink(missing_ok=True)  # force real rewrites
        paths.append(write_content_addressed(tree.images_dir, data, ".bin"))

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert {p.name for p in paths} == {name_of(data, ".bin")}
    assert (tree.images_dir / name_of(data, ".bin")).read_bytes() == data
    assert [p.name for p in tree.images_dir.iterdir()] == [name_of(data, ".bin")]


# -------------------------------------------------------------------------------------------- offload


def test_offload_data_url_writes_decoded_bytes(tree: RunTree) -> None:
    data = png_bytes()
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi"}, image_part(data_url(data, "image/jpeg"))],
        }
    ]
    before = copy.deepcopy(messages)
    result = offload_images(messages, tree.images_dir)
    assert isinstance(result, OffloadResult) and result.written == 1 and result.errors == []
    url = result.value[0]["content"][1]["image_url"]["url"]
    path = uri_to_path(url)
    assert url.startswith("file:///") and path.is_absolute()
    # named by what the bytes are (PNG), not by the declared media type
    assert path.parent == tree.images_dir and path.name == name_of(data, ".png")
    assert path.read_bytes() == data
    assert messages == before  # the caller's structure is untouched
    assert result.value[0]["content"][0] is messages[0]["content"][0]  # unchanged parts are shared


def test_offload_same_bytes_under_two_media_types_gives_one_file(tree: RunTree) -> None:
    data = png_bytes()
    result = offload_images(
        [image_part(data_url(data, "image/png")), image_part(data_url(data, "image/jpeg"))], tree.images_dir
    )
    assert result.written == 1 and result.errors == []
    assert [p.name for p in tree.images_dir.iterdir()] == [name_of(data, ".png")]


def test_offload_leaves_file_url_already_in_assets(tree: RunTree) -> None:
    path = write_image(tree.images_dir, png_bytes(), "image/png")
    messages = [image_part(path.as_uri())]
    result = offload_images(messages, tree.images_dir)
    assert result.written == 0 and result.errors == []
    assert result.value[0]["image_url"]["url"] == path.as_uri()


def test_offload_copies_a_dataset_file_url_named_by_its_format(tree: RunTree, tmp_path: Path) -> None:
    data = png_bytes((0, 255, 0))
    foreign = tmp_path / "cache" / "shot.webp"
    foreign.parent.mkdir()
    foreign.write_bytes(data)
    result = offload_images([image_part(foreign.as_uri())], tree.images_dir, source_roots=[foreign.parent])
    assert result.written == 1 and result.errors == []
    new = uri_to_path(result.value[0]["image_url"]["url"])
    assert new == tree.images_dir / name_of(data, ".png") and new.read_bytes() == data
    assert foreign.exists()


def test_offload_counts_distinct_files_and_touches_existing(tree: RunTree) -> None:
    data = png_bytes()
    existing = write_image(tree.images_dir, data, "image/png")
    os.utime(existing, (1_000_000, 1_000_000))
    url = data_url(data)
    rollout = {"trajectory": [{"prompt": [{"role": "user", "content": [image_part(url)]}]} for _ in range(3)]}
    result = offload_images(rollout, tree.images_dir)
    assert result.written == 1
    assert existing.stat().st_mtime > 1_000_000
    urls = {step["prompt"][0]["content"][0]["image_url"]["url"] for step in result.value["trajectory"]}
    assert urls == {existing.as_uri()}


@pytest.mark.parametrize(
    "bad",
    [
        "data:image/png,AAAA",  # no ;base64 marker
        "data:image/png;base64,",  # empty payload
        "data:image/png;base64,!!!@@@",  # not base64
        "data:image/png;base64,iVBORw0KGgo*AAAA",  # junk inside base64
        "data:image/png;base64",  # no comma
    ],
)
def test_offload_reports_malformed_data_urls_and_keeps_going(tree: RunTree, bad: str) -> None:
    good = png_bytes()
    messages = [{"role": "user", "content": [image_part(bad), image_part(data_url(good))]}]
    result = offload_images(messages, tree.images_dir)
    assert result.value[0]["content"][0]["image_url"]["url"] == bad
    assert [e.where for e in result.errors] == ["[0].content[0].image_url.url"]
    assert result.written == 1 and (tree.images_dir / name_of(good, ".png")).exists()


def test_offload_leaves_other_urls_alone(tree: RunTree, tmp_path: Path) -> None:
    messages = [
        image_part("https://example.com/a.png"),
        image_part("data:text/plain;base64,aGk="),
        image_part(None),
        {"type": "image_url", "image_url": "not-a-dict"},
    ]
    result = offload_images(messages, tree.images_dir)
    assert result.value is messages and result.written == 0 and result.errors == []
    missing = tmp_path / "gone.png"
    result = offload_images([image_part(missing.as_uri())], tree.images_dir, source_roots=[tmp_path])
    assert result.written == 0 and "cannot read" in result.errors[0].reason


def test_offload_raw_bytes_and_pil_parts(tree: RunTree) -> None:
    data = png_bytes((9, 9, 9))
    messages = [
        {"type": "image", "image": data},
        {"type": "image", "image": Image.new("RGB", (3, 3), (7, 7, 7)), "detail": "low"},
    ]
    result = offload_images(messages, tree.images_dir)
    assert result.written == 2
    first, second = result.value
    assert first == {
        "type": "image_url",
        "image_url": {"url": (tree.images_dir / name_of(data, ".png")).as_uri()},
    }
    assert second["type"] == "image_url" and second["detail"] == "low"
    assert uri_to_path(second["image_url"]["url"]).suffix == ".png"
    assert messages[0] == {"type": "image", "image": data}


def test_offload_with_relative_images_dir_gives_absolute_uris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = offload_images([image_part(data_url(png_bytes()))], "out/run_x/assets/images")
    url = result.value[0]["image_url"]["url"]
    assert (
        url.startswith("file:///")
        and uri_to_path(url).parent == tmp_path.resolve() / "out/run_x/assets/images"
    )


def test_offload_through_pydantic_messages_without_mutating_them(tree: RunTree) -> None:
    class Part(BaseModel):
        model_config = ConfigDict(frozen=True)
        type: str
        image_url: dict | None = None
        text: str | None = None

    class Message(BaseModel):
        role: str
        content: list[Part]

    data = png_bytes((4, 5, 6))
    message = Message(
        role="user",
        content=[Part(type="text", text="hi"), Part(type="image_url", image_url={"url": data_url(data)})],
    )
    result = offload_images([message], tree.images_dir)
    new = result.value[0]
    assert result.written == 1 and isinstance(new, Message)
    assert new.content[1].image_url == {"url": (tree.images_dir / name_of(data, ".png")).as_uri()}
    assert message.content[1].image_url == {"url": data_url(data)}
    assert new.content[0] is message.content[0]


def test_offload_keeps_the_image_when_the_write_fails(tree: RunTree, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(path: Path, data: bytes) -> None:  # fault injection: a real disk cannot be filled here
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("rlrun.runtime.assets.atomic_write_bytes", full_disk)
    url = data_url(png_bytes())
    result = offload_images([image_part(url)], tree.images_dir)
    assert result.value[0]["image_url"]["url"] == url and result.written == 0
    assert "No space left on device" in result.errors[0].reason


def test_run_tree_from_config(tmp_path: Path) -> None:
    config = RuntimeConfig(run_id="cfg-run", asset_root=str(tmp_path))
    assert RunTree.from_config(config).run_dir == config.run_dir.resolve()
