"""Where a run's outputs are: the run directory on its volume, the final weights, the logged samples.

The directory names below are the runtime's layout (rlrun.runtime.assets.RunTree, SampleLogger,
upload.presign); the client may not import those modules (no torch in a platform's process), so
tests/unit/client/test_results.py pins these names to the runtime's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rlrun.operator import names
from rlrun.operator.api import ProgressStatus, RLRun, to_runtime_config

WEIGHTS_DIR = "weights"
SAMPLES_DIR = "samples"
DONE_MARKER = "DONE"


@dataclass(frozen=True)
class RunResult:
    """What a platform needs after (or during) a run.

    `run_dir` is a path on the run's volume as pods mount it (cluster: claim `volume_claim` at /data) or
    on this machine (local backend, `volume_claim` None). `final_weights` is the newest exported weights
    directory (`model.safetensors` + `DONE`), `samples` where sample parquets go."""

    name: str
    phase: str | None
    reason: str | None
    message: str | None
    progress: ProgressStatus | None
    restarts: int
    volume_claim: str | None
    run_dir: str
    final_weights: str | None
    samples: str


def weights_path(run_dir: PurePosixPath | Path, step: int) -> str:
    return str(run_dir / WEIGHTS_DIR / f"step_{step}")


def newest_weights(run_dir: Path) -> str | None:
    """The newest complete weights directory on disk (local backend): the one with the highest step
    whose `DONE` marker exists."""
    root = run_dir / WEIGHTS_DIR
    steps = [
        int(p.name.removeprefix("step_"))
        for p in (root.iterdir() if root.is_dir() else [])
        if p.name.removeprefix("step_").isdigit() and (p / DONE_MARKER).is_file()
    ]
    return weights_path(run_dir, max(steps)) if steps else None


def samples_location(run: RLRun, run_dir: PurePosixPath | Path) -> str:
    up = run.spec.sample_upload
    key_prefix = "/".join(p for p in (up.prefix.strip("/"), f"run_{run.metadata.name}") if p)
    if up.enabled and up.bucket:
        return f"s3://{up.bucket}/{key_prefix}/"
    if up.enabled and up.presign_endpoint:
        return f"{up.presign_endpoint} (object keys {key_prefix}/step_<n>.parquet)"
    return str(run_dir / SAMPLES_DIR) + "/"


def cluster_result(run: RLRun) -> RunResult:
    """The result of a run on a cluster: paths on its volume, weights of the last reported step."""
    status = run.status
    progress = status.progress if status else None
    run_dir = PurePosixPath(to_runtime_config(run.metadata.name, run.spec).run_dir)
    claim = run.spec.storage.existing_claim or names.child_name(run.metadata.name, names.SUFFIX_ASSETS)
    weights = weights_path(run_dir, progress.step) if progress and progress.step else None
    return _result(run, progress, claim, str(run_dir), weights, samples_location(run, run_dir))


def local_result(run: RLRun, run_dir: Path) -> RunResult:
    progress = run.status.progress if run.status else None
    return _result(run, progress, None, str(run_dir), newest_weights(run_dir), samples_location(run, run_dir))


def _result(
    run: RLRun,
    progress: ProgressStatus | None,
    claim: str | None,
    run_dir: str,
    weights: str | None,
    samples: str,
) -> RunResult:
    status = run.status
    return RunResult(
        name=run.metadata.name,
        phase=status.phase if status else None,
        reason=status.reason if status else None,
        message=status.message if status else None,
        progress=progress,
        restarts=(status.restarts or 0) if status else 0,
        volume_claim=claim,
        run_dir=run_dir,
        final_weights=weights,
        samples=samples,
    )
