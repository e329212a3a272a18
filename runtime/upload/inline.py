"""Re-inline `file://` image references as `data:` URLs so a dashboard can show logged samples.

Rollouts carry images as absolute `file://` URIs into the run's asset tree (the pixels never travel as
base64 past the env-worker). A sample viewer outside the cluster cannot read that volume, so the sample
logger turns each reference back into a `data:<media type>;base64,...` URL, within limits:

* only regular files inside the asset root are read, through the one `file://` parser and the confined
  reader of `rlrun.runtime.fileurl` (a rollout is untrusted input: `file:///etc/shadow`, `..` segments,
  other hosts and symlinks out of the tree are refused), and only bytes whose header is an image
  (`imagedecode.probe`) are inlined, under the media type of their real format;
* files over the cap stay references, marked with the reason, so one huge screenshot cannot blow up the
  parquet or the orchestrator's memory;
* unreadable or missing files (for example swept by a TTL) are skipped with a warning, never an error;
* each URL is resolved once per cache, and the cache remembers misses too;
* the input is never mutated: new dicts and lists are built along the way.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlrun.runtime.config import PIL_MAX_IMAGE_PIXELS
from rlrun.runtime.fileurl import FileTooLarge, PathEscapeError, read_confined
from rlrun.runtime.imagedecode import ImageRejected, probe

log = logging.getLogger(__name__)

DEFAULT_MAX_INLINE_BYTES = 2 * 1024 * 1024
_MEDIA_SUBTYPES = {"JPEG": "jpeg", "MPO": "jpeg"}  # Pillow format -> image/<subtype>, where they differ
NOT_INLINED_KEY = "not_inlined"
"""Added to an `image_url` dict whose file was not inlined; the value says why (too large, missing, ...)."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """Why a `file://` URL was not inlined; `None` reason means "not ours to touch" (another scheme)."""

    reason: str | None


InlineCache = MutableMapping[str, "str | Skipped"]


def local_image_to_data_url(url: str, asset_root: Path, max_bytes: int) -> str | Skipped:
    """Resolve one URL: a `data:` URL for a readable image file under `asset_root`, else why not."""
    if not url.startswith("file:"):
        return Skipped(None)
    try:
        data = read_confined([asset_root], url, max_bytes=max_bytes)
    except PathEscapeError as exc:
        log.warning("sample image %s not inlined: outside the asset root %s (%s)", url[:200], asset_root, exc)
        return Skipped("outside asset root")
    except ValueError as exc:  # another host, a relative path
        log.warning("sample image %s not inlined: %s", url[:200], exc)
        return Skipped("not a local file URL")
    except FileNotFoundError:
        log.warning("sample image %s not inlined: missing", url[:200])
        return Skipped("missing")
    except FileTooLarge as exc:
        return Skipped(f"{exc.size} bytes > cap {max_bytes}")
    except OSError as exc:
        log.warning("sample image %s not inlined: %s", url[:200], exc.strerror or exc)
        return Skipped("unreadable")
    if len(data) > max_bytes:  # the file grew after the size check
        return Skipped(f"{len(data)}+ bytes > cap {max_bytes}")
    try:  # inlining never decodes pixels: only "is it an image" matters, not multimodal.maxImagePixels
        info = probe(data, PIL_MAX_IMAGE_PIXELS)
    except ImageRejected as exc:
        return Skipped(f"not an image: {exc}")
    media_type = f"image/{_MEDIA_SUBTYPES.get(info.format, info.format.lower())}"
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
