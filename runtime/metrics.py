"""Every Prometheus metric the runtime roles export, named here and nowhere else.

Each role serves them on its pod's metrics port (`pod_contract.METRICS_PORT`, the container port named
`metrics` that the chart's PodMonitor scrapes; `rlrun local` gives each role a loopback port). Per-step
figures are gauges holding the last step's value (what a dashboard plots against time); amounts are
counters (`rate()` turns them into per-second throughput). The Grafana dashboard's queries are checked
against this module (tests/unit/ship/test_run_monitoring.py), so a renamed metric cannot leave a dead panel.

Trainer ranks of one pod share the port through prometheus_client's multiprocess mode: each rank writes
its values to files in one directory and local rank 0 serves them all, every series labelled by `rank`.
The directory must be chosen before prometheus_client is first imported (runtime/trainer/telemetry.py).
Events and the RLRun's status stay the source of truth for phase and restarts; these only mirror figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from rlrun import pod_contract

# ---------------------------------------------------------------------------------------- orchestrator
ORCHESTRATOR_STEP = Gauge("rlrun_orchestrator_step", "Training steps whose rollouts the orchestrator wrote.")
ORCHESTRATOR_ATTEMPT = Gauge(
    "rlrun_orchestrator_attempt", "Restart attempt of this orchestrator (the operator's RLRUN_ATTEMPT)."
)
REWARD_MEAN = Gauge("rlrun_reward_mean", "Mean reward of the last step's rollouts.", ["environment"])
REWARD_STD = Gauge("rlrun_reward_std", "Standard deviation of the last step's rewards.", ["environment"])
STEP_SECONDS = Gauge("rlrun_orchestrator_step_seconds", "Wall time of the last orchestrator step.")
SAMPLES_PER_SECOND = Gauge("rlrun_orchestrator_samples_per_second", "Rollouts per second in the last step.")
POLICY_LAG = Gauge(
    "rlrun_policy_lag_steps", "Steps between the last step and the oldest policy its rollouts came from."
)
ROLLOUTS = Counter("rlrun_orchestrator_rollouts", "Rollouts received from env-workers.")
FILTERED_GROUPS = Counter(
    "rlrun_orchestrator_filtered_groups", "Degenerate groups (every reward equal) left out of training."
)
ROLLOUT_LATENCY = Histogram(
    "rlrun_orchestrator_rollout_group_seconds",
    "Latency of one group's rollouts request to an env-worker.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
UPLOAD_BYTES = Counter("rlrun_sample_upload_bytes", "Bytes of sample parquets uploaded.")
UPLOAD_FAILURES = Counter(
    "rlrun_sample_upload_failures",
    "Sample parquet uploads that failed or ran past their deadline (kept on the volume for a retry).",
)
UPLOAD_SKIPPED = Counter(
    "rlrun_sample_upload_skipped",
    "Logged steps not queued because the upload queue was full (kept on the volume for a retry).",
)
UPLOAD_DISCARDED = Counter(
    "rlrun_sample_upload_discarded",
    "Sample parquets deleted without upload: more than sampleUpload.maxPendingFiles waited for a retry.",
)
TRACKING_FAILURES = Counter(
    "rlrun_tracking_failures", "Experiment-tracking calls that failed (the run goes on).", ["sink"]
)

# --------------------------------------------------------------------------------------------- trainer
# Gauges keep the most recent value each rank wrote (multiprocess mode); counters add up per rank.
_RANK = ["rank"]
TRAINER_STEP = Gauge(
    "rlrun_trainer_step",
    "Policy version this rank trained (steps done).",
    _RANK,
    multiprocess_mode="mostrecent",
)
LOSS = Gauge("rlrun_trainer_loss", "Policy loss of the last step.", _RANK, multiprocess_mode="mostrecent")
GRAD_NORM = Gauge(
    "rlrun_trainer_grad_norm", "Gradient norm before clipping.", _RANK, multiprocess_mode="mostrecent"
)
CLIP_FRACTION = Gauge(
    "rlrun_trainer_clip_fraction",
    "Fraction of tokens whose ratio was clipped.",
    _RANK,
    multiprocess_mode="mostrecent",
)
LOGPROB_DELTA = Gauge(
    "rlrun_trainer_logprob_delta_mean",
    "Train/inference mismatch: mean |trainer - engine| logprob over the last step's sampled tokens.",
    _RANK,
    multiprocess_mode="mostrecent",
)
TRAINER_STEP_SECONDS = Gauge(
    "rlrun_trainer_step_seconds", "Wall time of the last trainer step.", _RANK, multiprocess_mode="mostrecent"
)
PEAK_MEMORY = Gauge(
    "rlrun_trainer_peak_memory_bytes",
    "Peak memory of this rank: CUDA allocated on GPU, resident set size on CPU.",
    [*_RANK, "device"],
    multiprocess_mode="mostrecent",
)
LOSS_TOKENS = Counter("rlrun_trainer_loss_tokens", "Completion tokens trained on.", _RANK)
IMAGES_MATERIALIZED = Counter(
    "rlrun_trainer_images_materialized", "Image slots re-created from refs next to the model.", _RANK
)
MATERIALIZE_SECONDS = Counter(
    "rlrun_trainer_materialize_seconds", "Time spent materializing images (images/s = rate ratio).", _RANK
)
IMAGE_FAILURES = Counter(
    "rlrun_trainer_image_failures", "Images that could not be materialized (missingImagePolicy drop).", _RANK
)
FANOUT_BYTES = Counter(
    "rlrun_trainer_fanout_bytes", "Micro-batch bytes this rank received from the fan-out.", _RANK
)

# ------------------------------------------------------------------------------------------- inference
POLICY_VERSION = Gauge("rlrun_inference_policy_version", "Policy version this inference server serves.")
RELOAD_SECONDS = Histogram(
    "rlrun_inference_reload_seconds",
    "Time to load one step's weights into the engine.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
QUEUE_DEPTH = Gauge("rlrun_inference_queue_depth", "Generation requests waiting for the engine.")
COMPLETIONS = Counter("rlrun_inference_completions", "Completions generated.")

# ----------------------------------------------------------------------------------------- env-workers
ROLLOUTS_IN_FLIGHT = Gauge("rlrun_env_rollouts_in_flight", "Rollout groups this env-worker is producing.")
ENV_ROLLOUTS = Counter("rlrun_env_rollouts", "Rollouts this env-worker returned.")
ENV_ERRORS = Counter("rlrun_env_rollout_errors", "Rollout group requests that failed.")


def metric_names() -> set[str]:
    """Every sample name these metrics export (counters' `_total`, histograms' `_bucket` ...)."""
    return sample_names(
        f for v in globals().values() if isinstance(v, Counter | Gauge | Histogram) for f in v.describe()
    )


def sample_names(families: Iterable[Any]) -> set[str]:
    """Sample names of metric families (`describe()` or a registry's `collect()`), children or not."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    return {f"{f.name}{suffix}" for f in families for suffix in suffixes.get(f.type, ("",))}


# ---------------------------------------------------------------------------------------- role figures


def record_orchestrator_step(step: int, rollouts: Sequence[Mapping[str, Any]], record: Mapping[str, Any],
                             filtered_groups: int) -> None:  # fmt: skip
    """Set the orchestrator's figures from one finished step (`record` is its metrics.jsonl line)."""
    by_env: dict[str, list[float]] = {}
    for rollout in rollouts:
        by_env.setdefault(str(rollout.get("env") or "unknown"), []).append(float(rollout["reward"]))
    for env, rewards in by_env.items():
        mean = sum(rewards) / len(rewards)
        REWARD_MEAN.labels(env).set(mean)
        REWARD_STD.labels(env).set((sum((r - mean) ** 2 for r in rewards) / len(rewards)) ** 0.5)
    ORCHESTRATOR_STEP.set(step + 1)
    STEP_SECONDS.set(record["time_step_s"])
    SAMPLES_PER_SECOND.set(record["rollouts"] / max(record["time_step_s"], 1e-9))
    POLICY_LAG.set(record["policy_lag"])
    ROLLOUTS.inc(record["rollouts"])
    FILTERED_GROUPS.inc(filtered_groups)


def record_trainer_step(record: Mapping[str, Any], peak_memory: tuple[str, int]) -> None:
    """Set one rank's figures from its metrics_rank<r>.jsonl line."""
    rank = str(record["rank"])
    TRAINER_STEP.labels(rank).set(record["step"] + 1)
    LOSS.labels(rank).set(record["loss"])
    GRAD_NORM.labels(rank).set(record["grad_norm"])
    CLIP_FRACTION.labels(rank).set(record["clip_fraction"])
    LOGPROB_DELTA.labels(rank).set(record["logprob_delta_mean"])
    TRAINER_STEP_SECONDS.labels(rank).set(record["time_step_s"])
    PEAK_MEMORY.labels(rank, peak_memory[0]).set(peak_memory[1])
    LOSS_TOKENS.labels(rank).inc(record["loss_tokens"])
    IMAGES_MATERIALIZED.labels(rank).inc(record["mm/images_materialized"])
    MATERIALIZE_SECONDS.labels(rank).inc(record["time/mm_materialize"])
    IMAGE_FAILURES.labels(rank).inc(record["mm/images_failed"])
    FANOUT_BYTES.labels(rank).inc(record["fanout_bytes_received"])


# ------------------------------------------------------------------------------------------ exposition


def serve_from_env(environ: Mapping[str, str], multiproc_dir: str | None = None) -> tuple[str, int] | None:
    """Serve /metrics from a daemon thread where $RLRUN_METRICS_PORT (and $RLRUN_METRICS_HOST, default
    0.0.0.0) say; with `multiproc_dir`, the values every process wrote there. None when no port is set."""
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

    port = environ.get(pod_contract.METRICS_PORT_ENV)
    if not port:
        return None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"${pod_contract.METRICS_PORT_ENV} must be a TCP port, got {port!r}")
    host = environ.get(pod_contract.METRICS_HOST_ENV) or "0.0.0.0"
    registry = REGISTRY
    if multiproc_dir is not None:
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=multiproc_dir)
    start_http_server(int(port), addr=host, registry=registry)
    return host, int(port)
