"""Per-step weight export for inference reload: `weights/step_<n>/model.safetensors` + `DONE`.

Inference loads only dirs with the marker, so the export is built in a temp dir and renamed into place.
Names are the HF state-dict names of the full model, so the engine loads them into the same class.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import torch
from safetensors.torch import save_file

DONE = "DONE"
WEIGHTS_FILE = "model.safetensors"
RELOAD_RETRY_SECONDS = 0.5


def weights_dir(root: Path, version: int) -> Path:
    return root / f"step_{int(version)}"


def _untied(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share storage (tied embeddings): give each name its own copy."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        t = tensor.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[name] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return out


def export_weights(root: Path, version: int, state: Mapping[str, torch.Tensor], keep: int = 3) -> Path:
    """Write version `version` atomically; keep it and the `keep - 1` newest exports older than it.

    Exports newer than `version` are from a run interrupted after its last checkpoint: the resumed run
    re-trains those versions from the checkpoint, so they are a discarded trajectory and are deleted.
    Pruning "the newest `keep`" instead deleted the export just written, and inference then failed to
    load it on resume.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = weights_dir(root, version)
    tmp = root / f".step_{version}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_untied(state), str(tmp / WEIGHTS_FILE), metadata={"version": str(version)})
    (tmp / DONE).write_text(f"{version}\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    versions = sorted(
        int(p.name.removeprefix("step_"))
        for p in root.glob("step_*")
        if p.name.removeprefix("step_").isdigit() and (p / DONE).is_file()
    )
    older = [v for v in versions if v < version]
    stale = older[: max(0, len(older) - (keep - 1))] + [v for v in versions if v > version]
    for old in stale:
        shutil.rmtree(weights_dir(root, old), ignore_errors=True)
    return final


def request_reload(urls: Sequence[str], path: Path, version: int, timeout: float = 120.0) -> None:
    """Ask every inference server to load `path` as `version`; a refusal names the server and its reply.

    A server not listening yet (still starting, or restarting) is retried until `timeout`: a resumed
    trainer republishes its checkpoint's weights first thing, possibly before inference is up.
    """
    for url in urls:
        deadline = time.monotonic() + timeout
        while True:
            try:
                response = httpx.post(
                    f"{url.rstrip('/')}/v1/load_weights",
                    json={"path": str(path), "version": version},
                    timeout=timeout,
                )
                break
            except httpx.ConnectError as err:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"inference {url} unreachable for {timeout:g}s, weights {path} (version {version}) "
                        f"not loaded: {err}"
                    ) from None
                time.sleep(RELOAD_RETRY_SECONDS)
        if response.status_code != 200:
            raise RuntimeError(
                f"inference {url} refused weights {path} (version {version}): "
                f"HTTP {response.status_code} {response.text[:500]}"
            )
