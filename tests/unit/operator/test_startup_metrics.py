"""The start-up metrics mirror status.startup: the newest attempt's figures as far as known (none of an
earlier attempt's left standing), each completed attempt observed once, and nothing of a forgotten run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from rlrun.operator import startup_metrics
from rlrun.operator.startup import GangTimes, record


def _latest(run: str) -> dict[str, float]:
    out = {}
    for phase in ("scheduled", "containers_started", "rendezvous", "model_loaded", "first_step"):
        value = REGISTRY.get_sample_value(
            "rlrun_trainer_startup_seconds", {"namespace": "ns", "run": run, "phase": phase}
        )
        if value is not None:
            out[phase] = value
    return out


def _count(phase: str) -> float:
    return REGISTRY.get_sample_value("rlrun_trainer_startup_phase_seconds_count", {"phase": phase}) or 0.0


def test_phase_labels_follow_the_status_fields():
    assert startup_metrics.phase_label("containersStartedSeconds") == "containers_started"
    assert startup_metrics.phase_label("firstStepSeconds") == "first_step"


def test_a_new_attempt_replaces_the_figures_and_a_complete_one_is_observed_once():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    gang = GangTimes(pods=2, scheduled=t0 + timedelta(seconds=3), started=t0 + timedelta(seconds=9))
    runtime = {
        "attempt": 0,
        **{
            k: t0 + timedelta(seconds=s)
            for k, s in (("rendezvousAt", 12), ("modelLoadedAt", 20), ("firstStepAt", 31))
        },
    }
    before = _count("first_step")
    timings, done = record([], 0, t0, 2, gang, runtime)
    assert done
    startup_metrics.publish("ns", "m", timings, timings[-1])
    startup_metrics.publish("ns", "m", timings, None)  # a later pass: nothing observed again
    assert _latest("m") == {
        "scheduled": 3,
        "containers_started": 9,
        "rendezvous": 12,
        "model_loaded": 20,
        "first_step": 31,
    }
    assert _count("first_step") - before == 1

    t1 = t0 + timedelta(minutes=5)  # attempt 1: only scheduled so far
    timings, done = record(timings, 1, t1, 2, GangTimes(2, t1 + timedelta(seconds=4), None), None)
    startup_metrics.publish("ns", "m", timings, None)
    assert not done and _latest("m") == {"scheduled": 4}

    startup_metrics.forget("ns", "m")
    assert _latest("m") == {}
