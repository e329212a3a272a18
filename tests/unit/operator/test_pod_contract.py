"""The pod contract (operator/render/common.py): every container the operator renders for the example
RLRuns, started the way the kubelet would start it, resolves through the runtime role's own argument
parsing (`settings_from(argv, environ)`, no server started) to a listen port that the Service targets and
to peer URLs that reach the right component's listening port.

Children are rendered with what the operator passes (attempts, progress URL and token): render is the only
producer of what the operator writes.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from aiohttp import web
from torch.distributed.run import get_args_parser

from rlrun.operator.api import RLRun
from rlrun.operator.progress import ProgressStore, progress_app
from rlrun.operator.render import render_children
from rlrun.runtime import podlog
from rlrun.runtime.config import Progress, attempt_log_dir

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO / "manifests/examples").glob("*.yaml"))
NAMESPACE = "team-a"
OPERATOR_URL = "http://rlrun-operator.rlrun-system.svc:8081"
ATTEMPT = 2
TOKEN = "progress-token-from-the-secret"
COMPONENT = "app.kubernetes.io/component"
POD_NAME = "demo-pod-0-x7k2q"
PEER_ENV = {"RLRUN_INFERENCE_URLS": "inference", "RLRUN_ENV_WORKER_URLS": "env-workers"}


def children(path: Path) -> list[dict[str, Any]]:
    """What the operator creates for the example at attempt ATTEMPT of both groups."""
    doc = yaml.safe_load(path.read_text())
    doc["metadata"].update(namespace=NAMESPACE, uid="uid-1", generation=1)
    return render_children(
        RLRun.model_validate(doc),
        trainer_attempt=ATTEMPT,
        orchestrator_attempt=ATTEMPT,
        progress_url=OPERATOR_URL,
        progress_token=TOKEN,
    )


def pod_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment the kubelet gives the container; secrets and the downward API filled in."""
    env: dict[str, str] = {}
    for e in container.get("env") or []:
        source = e.get("valueFrom")
        if source is None:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), e["value"])
        elif "secretKeyRef" in source:
            env[e["name"]] = TOKEN
        elif "job-completion-index" in source.get("fieldRef", {}).get("fieldPath", ""):
            env[e["name"]] = "0"
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[e["name"]] = POD_NAME
    return env


def pod_argv(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    """command + args with the kubelet's $(VAR) expansion."""
    return [
        re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), a)
        for a in [*container["command"], *container.get("args", [])]
    ]


@dataclass
class Entry:
    module: str
    """Where the role's `settings_from` lives."""
    argv: list[str]
    """The arguments that module's parser receives."""
    run_target: str | None = None
    """A `python -m` target, which must actually run the role's main."""


def entry_point(argv: list[str]) -> Entry:
    """Resolve a container's argv to the runtime module that parses it, as the image would run it: the
    log wrapper every container starts with is resolved like any console script, and its own argument
    parsing yields the role's argv."""
    (wrapper,) = entry_points(group="console_scripts", name=argv[0])
    assert wrapper.value == "rlrun.runtime.podlog:main", argv
    argv = podlog.child_argv(argv[1:])
    if argv[0] == "torchrun":
        args = get_args_parser().parse_args(argv[1:])
        assert args.module, f"torchrun must run a module (-m), got {argv}"
        return Entry(_role_module(args.training_script), args.training_script_args, args.training_script)
    if Path(argv[0]).name == "python" and argv[1] == "-m":  # `python`, or a venv's (/opt/vllm/bin/python)
        return Entry(_role_module(argv[2]), argv[3:], argv[2])
    (script,) = entry_points(group="console_scripts", name=argv[0])
    return Entry(script.value.split(":")[0], argv[1:])


def _role_module(target: str) -> str:
    """A package runs its `__main__`, which calls `<package>.main.main`; a module runs itself."""
    spec = find_spec(target)
    assert spec is not None, f"`python -m {target}`: no such module"
    if spec.submodule_search_locations is not None:
        assert find_spec(f"{target}.__main__") is not None, f"`python -m {target}`: no __main__"
        return f"{target}.main"
    return target


WORKLOADS = ("Deployment", "StatefulSet", "Job")


def resolve_url(url: str, objs: list[dict[str, Any]]) -> tuple[str, int]:
    """(component, container port) that a Service URL reaches: Service name + port -> targetPort (a
    port name) -> the workload its selector picks -> that container port's number."""
    parts = urlsplit(url)
    labels = (parts.hostname or "").split(".")
    # A StatefulSet pod's own name: <pod>.<headless Service>[.<namespace>.svc], pod = <StatefulSet>-<ordinal>.
    pod, svc_name = (labels[0], labels[1]) if len(labels) > 1 else (None, labels[0])
    svc = next(o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == svc_name)
    port = next(p for p in svc["spec"]["ports"] if p["port"] == parts.port)
    selector = svc["spec"]["selector"]
    workload = next(
        o
        for o in objs
        if o["kind"] in WORKLOADS and selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()
    )
    if pod is not None:
        assert svc["spec"]["clusterIP"] == "None" and workload["spec"]["serviceName"] == svc_name, url
        name, ordinal = pod.rsplit("-", 1)
        assert name == workload["metadata"]["name"] and int(ordinal) < workload["spec"]["replicas"], url
        if len(labels) > 2:
            assert labels[2:] == [workload["metadata"]["namespace"], "svc"], url
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    number = next(p["containerPort"] for p in c["ports"] if p["name"] == port["targetPort"])
    return selector[COMPONENT], number


def http_port(container: dict[str, Any]) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == "http")


def containers(objs: list[dict[str, Any]]):
    for o in objs:
        if o["kind"] in WORKLOADS:
            for c in o["spec"]["template"]["spec"]["containers"]:
                yield o["metadata"]["labels"][COMPONENT], c


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_container_parses_to_the_port_its_service_targets_and_reaches_its_peers(example):
    objs = children(example)
    seen = set()
    for component, c in containers(objs):
        env = pod_env(c)
        entry = entry_point(pod_argv(c, env))
        settings = importlib.import_module(entry.module).settings_from(entry.argv, env)
        inference = [resolve_url(u, objs) for u in env["RLRUN_INFERENCE_URLS"].split(",")]
        assert {target for target, _ in inference} == {"inference"}
        for variable, target in PEER_ENV.items():
            assert {resolve_url(u, objs)[0] for u in env[variable].split(",")} == {target}, variable
        if component == "inference":
            args = settings[0] if isinstance(settings, tuple) else settings
            assert args.port == http_port(c) and args.host == "0.0.0.0"
            # one URL per replica (each pod by its own name), all reaching this port
            replicas = RLRun.model_validate(yaml.safe_load(example.read_text())).spec.inference.replicas
            assert inference == [("inference", args.port)] * replicas
            if isinstance(settings, tuple):  # vLLM: its own arguments pass through untouched
                tp = str(
                    RLRun.model_validate(
                        yaml.safe_load(example.read_text())
                    ).spec.inference.tensor_parallel_size
                )
                assert settings[1][settings[1].index("--tensor-parallel-size") + 1] == tp
        elif component == "env-workers":
            assert settings.port == http_port(c)
            assert [resolve_url(u, objs) for u in settings.inference_urls] == inference
        elif component == "orchestrator":
            assert settings.status_port == http_port(c) and settings.attempt == ATTEMPT
            assert [resolve_url(u, objs) for u in settings.inference_urls] == inference
            assert {resolve_url(u, objs)[0] for u in settings.env_urls} == {"env-workers"}
        elif component == "trainer":
            assert entry.run_target == "rlrun.runtime.trainer"
            assert [resolve_url(u, objs) for u in settings.inference_url] == inference
            torchrun = get_args_parser().parse_args(podlog.child_argv(pod_argv(c, env)[1:])[1:])
            job = next(
                o for o in objs if o["kind"] == "Job" and o["metadata"]["labels"][COMPONENT] == component
            )
            pod = job["spec"]["template"]["spec"]
            host, subdomain = torchrun.master_addr.split(".")
            # rank 0 = Indexed Job pod 0, hostname <job>-0 in the headless Service's subdomain
            assert host == f"{job['metadata']['name']}-0" and job["spec"]["completionMode"] == "Indexed"
            assert subdomain == pod["subdomain"] and any(
                o["kind"] == "Service"
                and o["metadata"]["name"] == subdomain
                and o["spec"]["clusterIP"] == "None"
                for o in objs
            )
            rendezvous = next(p["containerPort"] for p in c["ports"] if p["name"] == "rendezvous")
            assert torchrun.master_port == rendezvous
            assert (torchrun.nnodes, torchrun.nproc_per_node, torchrun.node_rank) == (
                str(job["spec"]["parallelism"]), env["NPROC_PER_NODE"], 0,
            )  # fmt: skip
        seen.add(component)
    assert seen == {"inference", "env-workers", "orchestrator", "trainer"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_container_logs_to_its_attempt_and_pod_on_the_run_volume(example, tmp_path):
    """Every role starts through the log wrapper, which (from the env the pod gets and the ConfigMap's
    config file) writes `<run_dir>/logs/attempt-<n>/<component>-<pod>.log` on the mounted run volume: n is
    the Job's attempt for the trainer and the orchestrator, 0 for the servers (not restarted as attempts)."""
    objs = children(example)
    config = next(o for o in objs if o["kind"] == "ConfigMap")["data"]["config.json"]
    (tmp_path / "config.json").write_text(config)  # the ConfigMap as mounted
    seen = {}
    for component, c in containers(objs):
        assert c["command"][:2] == ["rlrun-podlog", "--"], c["command"]
        env = pod_env(c)
        assert env["RLRUN_CONFIG"] == "/etc/rlrun/config.json"
        path, cfg = podlog.pod_log({**env, "RLRUN_CONFIG": str(tmp_path / "config.json")})
        attempt = ATTEMPT if component in ("trainer", "orchestrator") else 0
        assert path == attempt_log_dir(cfg.run_dir, attempt) / f"{component}-{POD_NAME}.log"
        assert str(cfg.run_dir).startswith("/data/outputs/run_")
        data = next(m for m in c["volumeMounts"] if m["name"] == "data")
        assert path.is_relative_to(data["mountPath"]) and not data.get("readOnly")
        seen[component] = path
    assert set(seen) == {"inference", "env-workers", "orchestrator", "trainer"}


def test_every_python_m_target_really_runs_its_role():
    """`python -m X` of an installed module only runs something if X is a package with `__main__` or a
    module with a main guard: ask each for --help, as the pod's interpreter would run it."""
    targets = {
        entry.run_target
        for path in EXAMPLES
        for _, c in containers(children(path))
        if (entry := entry_point(pod_argv(c, pod_env(c)))).run_target
    }
    assert targets == {"rlrun.runtime.trainer", "rlrun.runtime.inference.vllm_server"}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    for target in sorted(targets):
        proc = subprocess.run(
            [sys.executable, "-m", target, "--help"], capture_output=True, text=True, timeout=60, env=env
        )
        assert proc.returncode == 0 and proc.stdout.startswith("usage: rlrun-"), (target, proc.stderr)


def test_orchestrator_progress_push_reaches_the_operators_endpoint(monkeypatch, tmp_path):
    """The URL, token and attempt the operator injects, used by the runtime's own publisher, are accepted
    by the operator's progress endpoint (served on loopback in place of the operator Service)."""
    from rlrun.runtime.orchestrator.progress import ProgressPublisher

    objs = children(EXAMPLES[0])
    run = yaml.safe_load(EXAMPLES[0].read_text())["metadata"]["name"]
    (c,) = next(
        o for o in objs if o["kind"] == "Job" and o["metadata"]["labels"][COMPONENT] == "orchestrator"
    )["spec"]["template"]["spec"]["containers"]
    env = pod_env(c)
    entry = entry_point(pod_argv(c, env))
    attempt = importlib.import_module(entry.module).settings_from(entry.argv, env).attempt

    async def scenario(tmp: Path) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
        store, poked = ProgressStore(), []
        store.newest((NAMESPACE, run), None, ATTEMPT)  # the run's current orchestrator attempt

        async def token_of(ns: str, secret: str, refresh: bool) -> bytes | None:
            return TOKEN.encode() if (ns, secret) == (NAMESPACE, f"{run}-progress") else None

        runner = web.AppRunner(progress_app(store, token_of, lambda ns, name: poked.append((ns, name))))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        injected = urlsplit(env["RLRUN_PROGRESS_URL"])
        assert f"{injected.scheme}://{injected.netloc}" == OPERATOR_URL
        monkeypatch.setenv("RLRUN_PROGRESS_URL", f"http://127.0.0.1:{runner.addresses[0][1]}{injected.path}")
        monkeypatch.setenv("RLRUN_PROGRESS_TOKEN", env["RLRUN_PROGRESS_TOKEN"])
        publisher = ProgressPublisher(tmp, Progress(run_id=env["RUN_ID"], attempt=attempt, max_steps=5))
        try:
            now = datetime.now(UTC)
            await publisher.publish(
                Progress(run_id=env["RUN_ID"], attempt=attempt, step=3, max_steps=5, updated_at=now)
            )
        finally:
            await publisher.aclose()
            await runner.cleanup()
        return store.newest((NAMESPACE, run), None, ATTEMPT), poked

    report, poked = asyncio.run(scenario(tmp_path))
    assert poked == [(NAMESPACE, run)]
    assert report is not None and (report["step"], report["attempt"]) == (3, ATTEMPT)
