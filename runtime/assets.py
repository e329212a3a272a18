"""The run asset tree: paths, content-addressed image writes, traversal-safe refs.

Every role of a run shares one directory on the RWX volume, `<root>/run_<RUN_ID>`:

    assets/images/<sha256-16>.<ext>   source images, named by content; the run's source of truth, never swept
    rollouts/ checkpoints/ weights/   owned by the orchestrator and the trainer

Images travel between roles as absolute `file://` URIs into this tree (a relative root once produced
`file://rel/...` URIs that nobody could open), so the root is made absolute here, always. Writes go
through a unique, fsynced temp file and `os.replace` (then the directory is fsynced), so a reader never
sees a partial file, a crash never leaves one under a content name, and identical content from concurrent
writers is harmless (the last rename wins with the same bytes). A file already under a content name is
trusted only when its size and hash match.

Offload treats messages as untrusted: `file://` sources must resolve inside allowed roots
(`rlrun.runtime.fileurl`), and only bytes whose header is an image within the pixel limit are stored
(`rlrun.runtime.imagedecode`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from rlrun import pod_contract
from rlrun.runtime.config import DEFAULT_ASSET_ROOT, DEFAULT_MAX_IMAGE_PIXELS, RuntimeConfig, check_safe_id
from rlrun.runtime.fileurl import PathEscapeError as PathEscapeError
from rlrun.runtime.fileurl import path_to_uri as path_to_uri
from rlrun.runtime.fileurl import read_confined, resolve_under
from rlrun.runtime.fileurl import resolve_inside as resolve_inside
from rlrun.runtime.fileurl import uri_to_path as uri_to_path
from rlrun.runtime.imagedecode import ImageRejected, check_pixels, probe

ASSET_ROOT_ENV = pod_contract.ASSET_ROOT_ENV
RUN_ID_ENV = pod_contract.RUN_ID_ENV
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
        dirs = (self.images_dir, self.rollouts_dir, self.checkpoints_dir, self.weights_dir)
        for path in dirs:
            path.mkdir(parents=True, exist_ok=True)
        return self

    def child(self, *ids: str) -> Path:
        """`run_dir/<id>/<id>...`, each id validated as a safe path component."""
        path = self.run_dir
        for part in ids:
            path = path / check_safe_id(part, "path id")
        return path


# ----------------------------------------------------------------------------- content-addressed writes


def latest_weights(run_dir: Path) -> tuple[Path, int] | None:
    """The newest complete export under `<run_dir>/weights` (`step_<n>` with DONE) and its version n.

    A server (re)started mid-run loads it before serving rollouts; the orchestrator routes rollouts only to
    replicas serving it (the current policy)."""
    root = Path(run_dir) / "weights"
    versions = sorted(
        (int(p.name.removeprefix("step_")), p)
        for p in (root.glob("step_*") if root.is_dir() else ())
        if p.name.removeprefix("step_").isdigit() and (p / "DONE").is_file()
    )
    if not versions:
        return None
    version, path = versions[-1]
    return path, version


def content_hash(data: bytes) -> str:
    """First 16 hex chars of sha256 over the (decoded, not base64) file bytes: the name of an image file."""
    return hashlib.sha256(data).hexdigest()[:HASH_HEX_CHARS]


def extension_for(media_type: str) -> str:
    """`image/jpeg` or `jpeg` -> `.jpg`; png, webp, gif keep their name; anything else -> `.img`."""
    subtype = media_type.split("/", 1)[-1].split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(subtype, ".img")


def encode_pil(image: Image.Image, media_type: str = "image/png") -> bytes:
    """Encode a PIL image in the format `media_type` names (PNG when it names no known format)."""
    fmt = _PIL_FORMATS.get(extension_for(media_type), "PNG")
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` durably to a unique temp file beside `path`, then rename it into place.

    The file is fsynced before the rename and the directory after it, so a crash leaves either no file or
    the whole file under `path`, never a truncated one. The temp name carries pid, thread and a random
    token, so concurrent writers never share one.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def holds_content(path: Path, data: bytes) -> bool:
    """True when the file at `path` has exactly `data`'s size and content hash (a crash left neither)."""
    try:
        if path.stat().st_size != len(data):
            return False
        return hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()
    except OSError:
        return False


def write_content_addressed(directory: Path, data: bytes, extension: str) -> Path:
    """Store `data` as `<directory>/<content_hash><extension>`; return its path.

    An existing file under that name is trusted only when its size and hash match `data` (then it only
    gets a fresh mtime: last-use semantics for the cache); a truncated or empty file, as a crash of an
    older writer without fsync could leave, is replaced atomically instead of poisoning the image.
    """
    path = directory / f"{content_hash(data)}{extension}"
    if holds_content(path, data):
        try:
            os.utime(path)  # unlike `touch`, never creates an empty file if a sweep removed it meanwhile
            return path
        except FileNotFoundError:
            pass
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

    def __init__(self, images_dir: Path, source_roots: tuple[Path, ...], max_pixels: int) -> None:
        self.images_dir = images_dir
        self.roots = (images_dir, *source_roots)
        self.max_pixels = max_pixels
        self.handled: set[Path] = set()
        self.errors: list[OffloadError] = []

    def refuse(self, value: Any, where: str, reason: str) -> Any:
        shown = value[:80] if isinstance(value, str) else type(value).__name__
        self.errors.append(OffloadError(where, shown, reason))
        return value

    def store(self, raw: bytes, extension: str) -> str:
        path = self.images_dir / f"{content_hash(raw)}{extension}"
        if path not in self.handled:
            write_content_addressed(self.images_dir, raw, extension)
            self.handled.add(path)
        return path.as_uri()

    def store_checked(self, value: Any, data: bytes, where: str) -> Any:
        """Store `data` if its header says it is an acceptable image (named by its real format), else
        keep `value` and report why; a failed write (disk full, read-only volume) is reported too."""
        try:
            info = probe(data, self.max_pixels)
        except ImageRejected as err:
            return self.refuse(value, where, str(err))
        try:
            return self.store(data, info.extension)
        except OSError as err:
            return self.refuse(value, where, f"cannot write to {self.images_dir}: {err}")

    def image(self, value: Any, where: str) -> Any:
        """The replacement URL for one image value, or `value` itself when it is left unchanged."""
        if isinstance(value, Image.Image):
            try:
                check_pixels(value.width, value.height, self.max_pixels)
                return self.store(encode_pil(value, "image/png"), ".png")
            except (OSError, ValueError) as err:
                return self.refuse(value, where, f"cannot store the image: {err}")
        if isinstance(value, bytes | bytearray | memoryview):
            return self.store_checked(value, bytes(value), where)
        if not isinstance(value, str):
            return value
        if value.startswith("data:"):
            if not value[5:].lower().startswith("image/"):
                return value  # a non-image data URL is not ours to handle
            try:
                _media_type, data = parse_data_url(value)
            except ValueError as err:
                return self.refuse(value, where, str(err))
            return self.store_checked(value, data, where)
        if value.startswith("file:"):
            return self.file_url(value, where)
        return value  # http(s) and anything else stay as they are

    def file_url(self, url: str, where: str) -> str:
        """Copy a file from an allowed root in; a file already stored under its content name stays as is."""
        try:
            source = resolve_under(self.roots, url)
            data = read_confined(self.roots, source)
        except ValueError as err:  # PathEscapeError, a malformed URL
            return self.refuse(url, where, str(err))
        except OSError as err:
            return self.refuse(url, where, f"cannot read {url[:200]}: {err}")
        if source.parent == self.images_dir and source.stem == content_hash(data):
            try:
                info = probe(data, self.max_pixels)
            except ImageRejected as err:
                return self.refuse(url, where, str(err))
            if source.suffix == info.extension:
                return url  # already in this run's images under its content name: not copied, not counted
        return self.store_checked(url, data, where)

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


def offload_images(
    value: Any,
    images_dir: str | os.PathLike[str],
    *,
    source_roots: Sequence[str | os.PathLike[str]] = (),
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> OffloadResult:
    """Store every inline image of `value` (messages, a rollout, a list of rollouts) in `images_dir`.

    Image parts are `{"type": "image_url", "image_url": {"url": ...}}` and `{"type": "image", "image": ...}`;
    their value may be a `data:image/...;base64,` URL, a `file://` URL, raw bytes or a PIL image. Each is
    rewritten to the absolute `file://` URI of its content-addressed file (an `image` part becomes an
    `image_url` part), named with the extension of its real format (not the declared media type).

    Messages are untrusted: a `file://` URL is read only when it resolves (symlinks followed) to a regular
    file under `images_dir` or one of `source_roots` (the run's asset tree, declared dataset directories);
    only bytes whose header is an image of a supported format within `max_pixels` are stored. A file
    already under `images_dir` with its content name is left as it is and not counted.
    Refused parts (outside the roots, not an image, empty, too many pixels, malformed data URLs,
    unreadable files, failed writes) are left unchanged and listed in `errors`; they never fail the batch.

    The input is never mutated: changed dicts and lists are new objects, unchanged subtrees are shared.
    `written` counts the distinct files handled by this call, including existing ones only touched.
    """
    directory = Path(images_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    roots = tuple(Path(root).resolve() for root in source_roots)
    offloader = _Offloader(directory, roots, max_pixels)
    new = offloader.walk(value, "")
    return OffloadResult(value=new, written=len(offloader.handled), errors=offloader.errors)
