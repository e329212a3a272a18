"""`file://` URLs: the one parser every role uses, and file reads confined to allowed directories.

Every role used to take URLs apart its own way: inference stripped `file://` without percent-decoding
(so a path with a space passed the check and failed the open), the sample logger parsed again. Here is the
only place that turns a URL into a path: percent-decoded, `file:///abs` or `file://localhost/abs`, any
other host refused, NUL bytes refused.

A URL coming from an environment or a rollout is untrusted: `read_confined` only reads a regular file
whose resolved path (every symlink followed) lies under one of the given roots, and opens that resolved
path with `O_NOFOLLOW`, so `/etc/passwd`, `/proc/self/environ`, `..`/`%2e%2e` segments and a symlink
placed inside a root that points out of it are all refused before a byte is read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

LOCAL_HOSTS = ("", "localhost")


class PathEscapeError(ValueError):
    """A ref that resolves outside the directory it must stay in: a bug or an attack, never a missing file."""


class FileTooLarge(OSError):
    """A file over the caller's byte cap: not read. `size` is its size in bytes."""

    def __init__(self, path: Path, size: int, cap: int) -> None:
        super().__init__(f"{path} has {size} bytes, more than {cap}")
        self.size = size


def uri_to_path(uri: str) -> Path:
    """The absolute path a `file://` URI names (percent-decoded). Refuses other hosts and relative paths."""
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise ValueError(f"not a file:// URI: {uri[:120]!r}")
    if parts.netloc.lower() not in LOCAL_HOSTS:
        raise ValueError(
            f"file URI {uri[:120]!r} has a host part {parts.netloc!r}: expected file:///absolute/path "
            "or file://localhost/absolute/path (was the asset root relative?)"
        )
    path = unquote(parts.path)
    if "\x00" in path:
        raise PathEscapeError(f"file URI {uri[:120]!r} contains a NUL byte")
    if not path.startswith("/"):
        raise ValueError(f"file URI {uri[:120]!r} does not name an absolute path")
    return Path(path)


def path_to_uri(path: str | os.PathLike[str]) -> str:
    """The absolute, percent-encoded `file://` URI of `path`."""
    return Path(os.path.abspath(path)).as_uri()


def resolve_inside(base: str | os.PathLike[str], ref: str | os.PathLike[str]) -> Path:
    """Resolve `ref` (a relative path, an absolute path or a `file://` URI) and prove it stays under `base`.

    Symlinks are followed before the check, so a link pointing out of `base` is refused like `..` is.
    Raises PathEscapeError (a ValueError) naming both paths when the ref escapes.
    """
    return resolve_under([base], ref)


def resolve_under(roots: Sequence[str | os.PathLike[str]], ref: str | os.PathLike[str]) -> Path:
    """`resolve_inside` for several allowed roots (relative refs are taken relative to the first)."""
    if not roots:
        raise PathEscapeError(f"ref {os.fspath(ref)[:120]!r}: no directory is allowed")
    bases = [Path(root).resolve() for root in roots]
    text = os.fspath(ref)
    if "\x00" in text:
        raise PathEscapeError(f"ref {text[:120]!r} contains a NUL byte")
    raw = uri_to_path(text) if text.startswith("file:") else Path(text)
    target = (raw if raw.is_absolute() else bases[0] / raw).resolve()
    if not any(target.is_relative_to(base) for base in bases):
        shown = ", ".join(str(b) for b in bases)
        raise PathEscapeError(f"ref {text[:200]!r} resolves to {target}, outside the allowed roots ({shown})")
    return target


def read_confined(
    roots: Sequence[str | os.PathLike[str]], ref: str | os.PathLike[str], max_bytes: int | None = None
) -> bytes:
    """The bytes of the regular file `ref` names, proven to lie under one of `roots`.

    Raises PathEscapeError when it resolves outside them, OSError when it is missing, not a regular file
    (a FIFO would block, a device never ends), FileTooLarge (an OSError) when larger than `max_bytes`.
    """
    path = resolve_under(roots, ref)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)  # NOFOLLOW: a file swapped for a link after the check is refused, not followed
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise FileTooLarge(path, info.st_size, max_bytes)
        return fh.read() if max_bytes is None else fh.read(max_bytes + 1)
