"""Re-inline `file://` image references as `data:` URLs so a dashboard can show logged samples.

Rollouts carry images as absolute `file://` URIs into the run's asset tree (the pixels never travel as
base64 past the env-worker). A sample viewer outside the cluster cannot read that volume, so the sample
logger turns each reference back into a `data:<media type>;base64,...` URL, within limits:

* only files inside the asset root are read (a rollout is untrusted input: `file:///etc/shadow`, `..`
  segments and symlinks out of the tree are refused);
* files over the cap stay references, marked with the reason, so one huge screenshot cannot blow up the
  parquet or the orchestrator's memory;
* unreadable or missing files (for example swept by a TTL) are skipped with a warning, never an error;
* each URL is resolved once per cache, and the cache remembers misses too;
* the input is never mutated: new dicts and lists are built along the way.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

log = logging.getLogger(__name__)

DEFAULT_MAX_INLINE_BYTES = 2 * 1024 * 1024
NOT_INLINED_KEY = "not_inlined"
"""Added to an `image_url` dict whose file was not inlined; the value says why (too large, missing, ...)."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """Why a `file://` URL was not inlined; `None` reason means "not ours to touch" (another scheme)."""

    reason: str | None


InlineCache = MutableMapping[str, "str | Skipped"]


def local_image_to_data_url(url: str, asset_root: Path, max_bytes: int) -> str | Skipped:
    """Resolve one URL: a `data:` URL for a readable image file under `asset_root`, else why not."""
    parsed = urlparse(url)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return Skipped(None)
    raw_path = unquote(parsed.path)
    media_type, _ = mimetypes.guess_type(raw_path)
    if not media_type or not media_type.startswith("image/"):
        return Skipped(f"not an image type: {raw_path}")
    try:
        path = Path(raw_path).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        log.warning("sample image %s not inlined: %s", raw_path, exc.strerror or exc)
        return Skipped("missing")
    if not path.is_relative_to(asset_root.resolve()):
        log.warning("sample image %s not inlined: outside the asset root %s", raw_path, asset_root)
        return Skipped("outside asset root")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                return Skipped(f"{size} bytes > cap {max_bytes}")
            data = f.read(max_bytes + 1)  # bounded even if the file grows after fstat
    except OSError as exc:
        log.warning("sample image %s not inlined: %s", raw_path, exc.strerror or exc)
        return Skipped("unreadable")
    if len(data) > max_bytes:
        return Skipped(f"{len(data)}+ bytes > cap {max_bytes}")
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def inline_local_images(
    obj: Any,
    asset_root: Path,
    max_bytes: int = DEFAULT_MAX_INLINE_BYTES,
    cache: InlineCache | None = None,
) -> Any:
    """Return a copy of `obj` (nested dicts/lists) with every `{"image_url": {"url": "file://..."}}`
    re-inlined as a data URL. Containers are rebuilt, leaves are shared; `obj` is never mutated.

    Pass one `cache` per rollout to read each file once while keeping at most one rollout's images in memory.
    """
    cache = {} if cache is None else cache
    return _inline(obj, asset_root, max_bytes, cache)


def _inline(obj: Any, asset_root: Path, max_bytes: int, cache: InlineCache) -> Any:
    if isinstance(obj, list | tuple):
        return [_inline(item, asset_root, max_bytes, cache) for item in obj]
    if not isinstance(obj, dict):
        return obj
    out = {key: _inline(value, asset_root, max_bytes, cache) for key, value in obj.items()}
    image = obj.get("image_url")
    if isinstance(image, dict) and isinstance(image.get("url"), str):
        url = image["url"]
        if url not in cache:
            cache[url] = local_image_to_data_url(url, asset_root, max_bytes)
        outcome = cache[url]
        if isinstance(outcome, str):
            out["image_url"] = {**out["image_url"], "url": outcome}
        elif outcome.reason is not None:
            out["image_url"] = {**out["image_url"], NOT_INLINED_KEY: outcome.reason}
    return out
