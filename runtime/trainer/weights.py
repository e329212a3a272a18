"""Per-step weight export for inference reload: `weights/step_<n>/model.safetensors` + `DONE`.

Inference loads only dirs with the marker, so the export is built in a temp dir and renamed into place.
Names are the HF state-dict names of the full model, so the engine loads them into the same class.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx
import torch
from safetensors.torch import save_file

from rlrun.runtime.retention import stale_weights, step_dirs

log = logging.getLogger("rlrun.trainer")
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
    for old in stale_weights(step_dirs(root, (DONE,)), version, keep):
        shutil.rmtree(weights_dir(root, old), ignore_errors=True)
    return final


def reload_one(
    url: str, path: Path, version: int, timeout: float, should_stop: Callable[[], bool] = lambda: False
) -> str | None:
    """Ask one inference server to load `path` as `version`; None once it answers that it serves it, else
    why not. A server not listening yet (starting, restarting) is retried until `timeout` seconds, or
    until `should_stop` (a SIGTERM: inference is stopping too, and the grace window is the checkpoint's)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.post(
                f"{url.rstrip('/')}/v1/load_weights",
                json={"path": str(path), "version": version},
                timeout=max(deadline - time.monotonic(), RELOAD_RETRY_SECONDS),
            )
            break
        except httpx.ConnectError as err:
            if should_stop():
                return f"stopped waiting on SIGTERM: {err}"
            if time.monotonic() > deadline:
                return f"unreachable for {timeout:g}s: {err}"
            time.sleep(RELOAD_RETRY_SECONDS)
        except httpx.HTTPError as err:
            return f"{type(err).__name__}: {err}"
    if response.status_code != 200:
        return f"HTTP {response.status_code} {response.text[:500]}"
    try:
        served = int(response.json()["version"])
    except (ValueError, KeyError, TypeError):
        return f"unreadable answer {response.text[:200]!r}"
    return None if served == version else f"answered version {served}"


def request_reload(
    urls: Sequence[str],
    path: Path,
    version: int,
    timeout: float,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, str]:
    """Reload every inference replica with `path` as `version`, all at once, each within `timeout`
    (orchestrator.weightSyncTimeoutSeconds); {url: why it failed} for those that did not confirm it.

    A replica that fails is logged, not raised: the orchestrator routes rollouts only to replicas serving
    the current version (and fails the step, naming each one, when none does within the same bound), and
    the trainer's next reload brings the lagging one back. Failing the trainer instead would restart the
    whole group from its checkpoint for one bad inference pod.

    `should_stop` (a SIGTERM) ends the wait at once, whatever the replicas do: the grace window belongs to
    the checkpoint, and a replica that is stopping too may never answer (a pod whose address is already
    gone, a stopped process whose socket still accepts). Nothing is asked once it is set; a request in
    flight is abandoned on its daemon thread, which its own `timeout` ends. Daemon threads, not an
    executor's: the interpreter joins those at exit, so an abandoned request would hold the stopping trainer
    until it times out. The resumed trainer publishes its weights again first thing.
    """
    if should_stop():
        return {url: "not asked: stopping on SIGTERM" for url in urls}
    results: dict[str, str | None] = {}

    def ask(url: str) -> None:
        results[url] = reload_one(url, path, version, timeout, should_stop)

    threads = [threading.Thread(target=ask, args=(u,), name="reload", daemon=True) for u in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive() and not should_stop():
            thread.join(RELOAD_RETRY_SECONDS)
    outcome = {url: results.get(url, "no answer yet; abandoned on SIGTERM") for url in urls}
    failed = {url: why for url, why in outcome.items() if why is not None}
    for url, why in failed.items():
        log.warning("inference %s did not load weights %s (version %d): %s", url, path, version, why)
    return failed
