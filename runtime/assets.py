"""The run asset tree: paths, content-addressed image writes, traversal-safe refs, the feature TTL sweep.

Every role of a run shares one directory on the RWX volume, `<root>/run_<RUN_ID>`:

    assets/images/<sha256-16>.<ext>   source images, named by content; the run's source of truth, never swept
    assets/mm_features/...            regenerable processed features; files older than the TTL are swept
    rollouts/ checkpoints/ weights/   owned by the orchestrator and the trainer

Images travel between roles as absolute `file://` URIs into this tree (a relative root once produced
`file://rel/...` URIs that nobody could open), so the root is made absolute here, always. Writes go
through a unique temp file and `os.replace`, so a reader never sees a partial file and identical content
from concurrent writers is harmless (the last rename wins with the same bytes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from PIL import Image

from rlrun import pod_contract
from rlrun.runtime.config import DEFAULT_ASSET_ROOT, RuntimeConfig, check_safe_id

log = logging.getLogger(__name__)

ASSET_ROOT_ENV = pod_contract.ASSET_ROOT_ENV
RUN_ID_ENV = pod_contract.RUN_ID_ENV
DEFAULT_FEATURE_TTL_SECONDS = 1800.0
TEMP_FILE_GRACE_SECONDS = 3600.0  # extra age before a sweep removes a writer's temp file (a crashed writer's)
HASH_HEX_CHARS = 16

_EXTENSIONS = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png", "webp": ".webp", "gif": ".gif"}
_PIL_FORMATS = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF"}


# ---------------------------------------------------------------------------------------------- the tree


@dataclass(frozen=True)
class RunTree:
    """Paths of one run's directory. `root` is made absolute and resolved; `run_id` must be a safe id."""

    root: Path
    run_id: str

    def __init__(self, root: str | os.PathLike[str], run_id: str) -> None:
        check_safe_id(run_id, "RUN_ID")
        object.__setattr__(self, "root", Path(root).expanduser().resolve())
        object.__setattr__(self, "run_id", run_id)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> RunTree:
        """The tree a pod writes to: `$RLRUN_ASSET_ROOT` (default /data/outputs) and `$RUN_ID`.

        Raises RuntimeError when RUN_ID is unset or unsafe: a writer must never guess its run.
        """
        env = os.environ if environ is None else environ
        run_id = env.get(RUN_ID_ENV, "")
        if not run_id:
            raise RuntimeError(f"${RUN_ID_ENV} is not set: cannot locate the run asset tree")
        try:
            return cls(env.get(ASSET_ROOT_ENV) or DEFAULT_ASSET_ROOT, run_id)
        except ValueError as err:
            raise RuntimeError(f"${RUN_ID_ENV}: {err}") from err

    @classmethod
    def from_config(cls, config: RuntimeConfig) -> RunTree:
        """The tree of a loaded runtime config (which already applied the RUN_ID / root env overrides)."""
        return cls(config.asset_root, config.run_id)

    @property
    def run_dir(self) -> Path:
        return self.root / f"run_{self.run_id}"

    @property
    def assets_dir(self) -> Path:
        return self.run_dir / "assets"

    @property
    def images_dir(self) -> Path:
        return self.assets_dir / "images"

    @property
    def features_dir(self) -> Path:
        return self.assets_dir / "mm_features"

    @property
    def rollouts_dir(self) -> Path:
        return self.run_dir / "rollouts"

    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def weights_dir(self) -> Path:
        return self.run_dir / "weights"

    def ensure(self) -> RunTree:
        """Create every directory of the tree (idempotent) and return self."""
        dirs = (self.images_dir, self.features_dir, self.rollouts_dir, self.checkpoints_dir, self.weights_dir)
        for path in dirs:
            path.mkdir(parents=True, exist_ok=True)
        return self

    def child(self, *ids: str) -> Path:
        """`run_dir/<id>/<id>...`, each id validated as a safe path component."""
        path = self.run_dir
        for part in ids:
            path = path / check_safe_id(part, "path id")
        return path


# ------------------------------------------------------------------------------------- refs and URIs


def uri_to_path(uri: str) -> Path:
    """The absolute path a `file://` URI names (percent-decoded). Refuses host parts and relative paths."""
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise ValueError(f"not a file:// URI: {uri[:120]!r}")
    if parts.netloc not in ("", "localhost"):
        raise ValueError(
            f"file URI {uri[:120]!r} has a host part {parts.netloc!r}: expected file:///absolute/path "
            "(was the asset root relative?)"
        )
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ValueError(f"file URI {uri[:120]!r} does not name an absolute path")
    return Path(path)


def path_to_uri(path: Path) -> str:
    """The absolute, percent-encoded `file://` URI of `path`."""
    return Path(os.path.abspath(path)).as_uri()


class PathEscapeError(ValueError):
    """A ref that resolves outside the directory it must stay in: a bug or an attack, never a missing file."""


def resolve_inside(base: str | os.PathLike[str], ref: str | os.PathLike[str]) -> Path:
    """Resolve `ref` (a relative path, an absolute path or a `file://` URI) and prove it stays under `base`.

    Symlinks are followed before the check, so a link pointing out of `base` is refused like `..` is.
    Raises PathEscapeError (a ValueError) naming both paths when the ref escapes.
    """
    base_path = Path(base).resolve()
    text = os.fspath(ref)
    if "\x00" in text:
        raise PathEscapeError(f"ref {text[:120]!r} contains a NUL byte")
    raw = uri_to_path(text) if text.startswith("file:") else Path(text)
    target = (raw if raw.is_absolute() else base_path / raw).resolve()
    if not target.is_relative_to(base_path):
        raise PathEscapeError(f"ref {text[:200]!r} resolves to {target}, outside {base_path}")
    return target


# ----------------------------------------------------------------------------- content-addressed writes


def content_hash(data: bytes) -> str:
    """First 16 hex chars of sha256 over the (decoded, not base64) file bytes: the name of an image file."""
    return hashlib.sha256(data).hexdigest()[:HASH_HEX_CHARS]


def extension_for(media_type: str) -> str:
    """`image/jpeg` or `jpeg` -> `.jpg`; png, webp, gif keep their name; anything else -> `.img`."""
    subtype = media_type.split("/", 1)[-1].split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(subtype, ".img")


def sniff_extension(data: bytes) -> str:
    """The extension of raw image bytes from their header (`.img` when PIL does not recognize them)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return extension_for(image.format or "")
    except (OSError, ValueError):
        return ".img"


def encode_pil(image: Image.Image, media_type: str = "image/png") -> bytes:
    """Encode a PIL image in the format `media_type` names (PNG when it names no known format)."""
    fmt = _PIL_FORMATS.get(extension_for(media_type), "PNG")
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a unique temp file beside `path`, then rename it into place.

    The temp name carries pid, thread and a random token, so concurrent writers never share one.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_content_addressed(directory: Path, data: bytes, extension: str) -> Path:
    """Store `data` as `<directory>/<content_hash><extension>`; an existing file only gets a fresh mtime.

    The refresh gives the cache last-use semantics. It uses `os.utime`, which (unlike `touch`) never
    creates an empty file when a sweep removed the file in between; the write then happens instead.
    """
    path = directory / f"{content_hash(data)}{extension}"
    try:
        os.utime(path)
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    return path


def write_image(images_dir: Path, data: bytes | Image.Image, media_type: str = "image/png") -> Path:
    """Write an image (encoded bytes or a PIL image) into `images_dir`, named by content; return its path."""
    raw = encode_pil(data, media_type) if isinstance(data, Image.Image) else bytes(data)
    return write_content_addressed(Path(images_dir), raw, extension_for(media_type))


# ------------------------------------------------------------------------------------ message offload


@dataclass(frozen=True)
class OffloadError:
    """An image part that was left unchanged, where it is (`where`, e.g. `[0].content[1]`) and why."""

    where: str
    url: str  # the first 80 characters: a data URL can be megabytes
    reason: str


@dataclass
class OffloadResult:
    """The rewritten structure, how many distinct image files were handled, and the parts left unchanged."""

    value: Any
    written: int
    errors: list[OffloadError] = field(default_factory=list)


def parse_data_url(url: str) -> tuple[str, bytes]:
    """`data:image/<subtype>;base64,<payload>` -> (media type, decoded bytes); ValueError when malformed."""
    header, sep, payload = url.partition(",")
    if not sep:
        raise ValueError("data URL has no ',' separating header and payload")
    if not header.lower().startswith("data:image/"):
        raise ValueError(f"not an image data URL (header {header[:40]!r})")
    if ";base64" not in header.lower():
        raise ValueError("data URL is not base64-encoded (no ';base64' marker)")
    if not payload.strip():
        raise ValueError("data URL has an empty payload")
    try:  # strict: junk characters are an error, not silently skipped (line breaks are allowed)
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"invalid base64 payload: {err}") from err
    if not data:
        raise ValueError("data URL decodes to no bytes")
    return header[5:].split(";", 1)[0], data


class _Offloader:
    """One offload call: walks the structure copy-on-write and remembers which files it handled."""

    def __init__(self, images_dir: Path) -> None:
        self.images_dir = images_dir
        self.handled: set[Path] = set()
        self.errors: list[OffloadError] = []

    def store(self, data: bytes | Image.Image, extension: str) -> str:
        raw = encode_pil(data, "image/png") if isinstance(data, Image.Image) else data
        path = self.images_dir / f"{content_hash(raw)}{extension}"
        if path not in self.handled:
            write_content_addressed(self.images_dir, raw, extension)
            self.handled.add(path)
        return path.as_uri()

    def store_or_keep(self, value: Any, data: bytes | Image.Image, extension: str, where: str) -> Any:
        """`store`, but a failed write (disk full, read-only volume) keeps the original value and reports it."""
        try:
            return self.store(data, extension)
        except OSError as err:
            shown = value[:80] if isinstance(value, str) else type(value).__name__
            self.errors.append(OffloadError(where, shown, f"cannot write to {self.images_dir}: {err}"))
            return value

    def image(self, value: Any, where: str) -> Any:
        """The replacement URL for one image value, or `value` itself when it is left unchanged."""
        if isinstance(value, Image.Image):
            return self.store_or_keep(value, value, ".png", where)
        if isinstance(value, bytes | bytearray | memoryview):
            return self.store_or_keep(value, bytes(value), sniff_extension(bytes(value)), where)
        if not isinstance(value, str):
            return value
        if value.startswith("data:"):
            if not value[5:].lower().startswith("image/"):
                return value  # a non-image data URL is not ours to handle
            try:
                media_type, data = parse_data_url(value)
            except ValueError as err:
                self.errors.append(OffloadError(where, value[:80], str(err)))
                return value
            return self.store_or_keep(value, data, extension_for(media_type), where)
        if value.startswith("file:"):
            return self.file_url(value, where)
        return value  # http(s) and anything else stay as they are

    def file_url(self, url: str, where: str) -> str:
        try:
            source = uri_to_path(url)
        except ValueError as err:
            self.errors.append(OffloadError(where, url[:80], str(err)))
            return url
        if source.resolve().is_relative_to(self.images_dir):
            return url  # already in this run's images: not copied, not counted
        try:
            data = source.read_bytes()
        except OSError as err:
            self.errors.append(OffloadError(where, url[:80], f"cannot read {source}: {err}"))
            return url
        return self.store_or_keep(url, data, source.suffix or ".img", where)

    def walk(self, node: Any, where: str) -> Any:
        """Return `node` with image parts rewritten; untouched subtrees are returned as the same objects."""
        if isinstance(node, dict):
            return self.walk_dict(node, where)
        if type(node) in (list, tuple):
            items = [self.walk(item, f"{where}[{i}]") for i, item in enumerate(node)]
            if all(new is old for new, old in zip(items, node, strict=True)):
                return node
            return type(node)(items)
        if hasattr(type(node), "model_fields") and hasattr(node, "model_copy"):  # a pydantic message object
            return self.walk_model(node, where)
        return node

    def walk_model(self, node: Any, where: str) -> Any:
        """A pydantic message or content part; image parts are matched like their dict form."""
        if getattr(node, "type", None) == "image_url":
            inner = getattr(node, "image_url", None)
            if isinstance(inner, dict) or hasattr(inner, "model_copy"):
                old = inner.get("url") if isinstance(inner, dict) else getattr(inner, "url", None)
                url = self.image(old, f"{where}.image_url.url")
                if url is old:
                    return node
                new = (
                    {**inner, "url": url}
                    if isinstance(inner, dict)
                    else inner.model_copy(update={"url": url})
                )
                return node.model_copy(update={"image_url": new})
        updates = {}
        for name in type(node).model_fields:
            old = getattr(node, name)
            new = self.walk(old, f"{where}.{name}")
            if new is not old:
                updates[name] = new
        return node.model_copy(update=updates) if updates else node

    def walk_dict(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        kind = node.get("type")
        if kind == "image_url" and isinstance(node.get("image_url"), dict):
            inner = node["image_url"]
            url = self.image(inner.get("url"), f"{where}.image_url.url")
            return node if url is inner.get("url") else {**node, "image_url": {**inner, "url": url}}
        if kind == "image" and "image" in node:
            url = self.image(node["image"], f"{where}.image")
            if url is node["image"] or not isinstance(url, str):
                return node
            rest = {k: v for k, v in node.items() if k not in ("type", "image")}
            return {**rest, "type": "image_url", "image_url": {"url": url}}
        changed = {key: self.walk(value, f"{where}.{key}") for key, value in node.items()}
        if all(changed[key] is node[key] for key in node):
            return node
        return changed


def offload_images(value: Any, images_dir: str | os.PathLike[str]) -> OffloadResult:
    """Store every inline image of `value` (messages, a rollout, a list of rollouts) in `images_dir`.

    Image parts are `{"type": "image_url", "image_url": {"url": ...}}` and `{"type": "image", "image": ...}`;
    their value may be a `data:image/...;base64,` URL, a `file://` URL, raw bytes or a PIL image. Each is
    rewritten to the absolute `file://` URI of its content-addressed file (an `image` part becomes an
    `image_url` part). A `file://` URL already under `images_dir` is left as it is and not counted; a
    foreign one is copied in, keeping its suffix. Malformed data URLs, unreadable files and failed
    writes are left unchanged and listed in `errors`; they never fail the batch.

    The input is never mutated: changed dicts and lists are new objects, unchanged subtrees are shared.
    `written` counts the distinct files handled by this call, including existing ones only touched.
    """
    directory = Path(images_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    offloader = _Offloader(directory)
    new = offloader.walk(value, "")
    return OffloadResult(value=new, written=len(offloader.handled), errors=offloader.errors)


# ----------------------------------------------------------------------------------------- TTL sweep


def sweep_features(
    tree: RunTree,
    ttl_seconds: float = DEFAULT_FEATURE_TTL_SECONDS,
    now: float | None = None,
    *,
    on_error: Callable[[Path, OSError], None] | None = None,
) -> int:
    """Delete files under `assets/mm_features` with an mtime before `now - ttl_seconds`; return the count.

    Images are never swept: they are the run's source of truth. Directories are kept. A file that vanishes
    or cannot be removed mid-sweep is skipped. Concurrent writers are safe: they rename complete files into
    place, their temp files (`.<name>.<...>.tmp`) are left alone until `TEMP_FILE_GRACE_SECONDS` past the
    TTL (only a crashed writer leaves one that old), an unlink removes a whole file, and a reader that
    already opened it keeps reading the full content. Over-evicting a feature only forces a recompute.
    """
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds}")
    root = tree.features_dir
    if not root.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - ttl_seconds
    removed = 0
    for dirpath, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            path = Path(dirpath) / name
            limit = cutoff - TEMP_FILE_GRACE_SECONDS if _is_temp(name) else cutoff
            try:
                if path.lstat().st_mtime < limit:
                    path.unlink()
                    removed += 1
            except OSError as err:
                if on_error is not None and not isinstance(err, FileNotFoundError):
                    on_error(path, err)
    if removed:
        log.info("Swept %d stale mm_feature artifacts (ttl=%ss) under %s", removed, ttl_seconds, root)
    return removed


def _is_temp(name: str) -> bool:
    """Temp files of `atomic_write_bytes`: `.<name>.<pid>.<thread>.<token>.tmp`."""
    return name.startswith(".") and name.endswith(".tmp")
