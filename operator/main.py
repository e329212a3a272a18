"""Run the operator: kopf in one event loop, the progress endpoint beside it, metrics on their own port.

    rlrun operator --namespace team-a                 # watch one namespace
    rlrun operator --all-namespaces --peering rlrun   # cluster-wide, HA via kopf peering
    rlrun operator --kubeconfig ~/.kube/dev --progress-port 8081 --metrics-port 9090

Tests run `serve()` in a thread (tests/integration/operator/operator_harness.py) or the command as a
subprocess.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import kopf
from aiohttp import web
from kubernetes import client

from rlrun.operator.handlers import register
from rlrun.operator.kube import Kube, load_api_client
from rlrun.operator.namespaces import watchable
from rlrun.operator.peering import PeeringGate, own_identity, random_priority
from rlrun.operator.progress import ProgressStore, progress_app
from rlrun.operator.reconciler import Reconciler
from rlrun.operator.restarts import StallPolicy

log = logging.getLogger("rlrun.operator")


@dataclass
class OperatorConfig:
    namespaces: list[str] = field(default_factory=list)
    """Empty = cluster-wide."""
    kubeconfig: str | None = None
    progress_host: str = "0.0.0.0"
    """Address the progress and metrics endpoints listen on."""
    progress_port: int = 8081
    progress_url: str | None = None
    """How pods reach the progress endpoint (the operator Service); None = not injected."""
    metrics_port: int | None = None
    liveness_port: int | None = None
    interval_seconds: float = 10.0
    """Period of the level-based pass per run (events trigger passes sooner)."""
    stall: StallPolicy = field(default_factory=StallPolicy)
    peering: str | None = None
    """kopf peering object name for HA; None = standalone."""
    priority: int | None = None
    """This replica's peering priority; None draws a distinct random one (see peering.py)."""
    peering_lifetime: int = 60
    """Seconds a replica's keep-alive stays valid: how long a standby waits after the active one died."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name}
        entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def serve(
    config: OperatorConfig,
    stop: threading.Event,
    ready: threading.Event | None = None,
    on_bound: Callable[[int], None] | None = None,
    kube_factory: Callable[[client.ApiClient], Kube] = Kube,
) -> None:
    """Run until `stop` is set. `on_bound` gets the progress port (useful with port 0); `kube_factory`
    lets a test wrap the API calls (fault injection)."""
    api = load_api_client(config.kubeconfig)
    kube = kube_factory(api)
    namespaces = config.namespaces
    if namespaces:
        namespaces = await asyncio.to_thread(watchable, kube, namespaces)
        if not namespaces:
            api.close()
            raise RuntimeError(f"the operator may watch none of its namespaces {config.namespaces}")
    store = ProgressStore()
    identity, priority = own_identity(), config.priority or random_priority()
    gate = None
    if config.peering is not None:
        poll = max(0.5, min(5.0, config.peering_lifetime / 6))
        gate = PeeringGate(kube, config.peering, namespaces, identity, priority, poll)
    active = gate.active if gate else (lambda: True)
    reconciler = Reconciler(kube, store, config.stall, config.progress_url, active=active)
    registry = kopf.OperatorRegistry()
    register(registry, reconciler, api, peering_lifetime=config.peering_lifetime)
    loop = asyncio.get_running_loop()
    background = [loop.create_task(reconciler.tick_forever(config.interval_seconds))]
    if gate:
        background.append(loop.create_task(gate.watch_forever()))
    app = progress_app(store, reconciler.token_of, reconciler.poke_soon, active)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.progress_host, config.progress_port)
    await site.start()
    port = runner.addresses[0][1]
    log.info("progress endpoint listening on http://%s:%d", config.progress_host, port)
    if on_bound:
        on_bound(port)
    metrics = None
    if config.metrics_port is not None:
        from prometheus_client import start_http_server

        metrics, _ = start_http_server(config.metrics_port, addr=config.progress_host)
    liveness = f"http://0.0.0.0:{config.liveness_port}/healthz" if config.liveness_port else None
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=config.peering is None,
            peering_name=config.peering,
            priority=priority,
            identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
            liveness_endpoint=liveness,
            stop_flag=stop,
            ready_flag=ready,
        )
    finally:
        # kopf waits for `stop` in a worker thread; left unset (kopf stopped on SIGTERM), asyncio.run
        # would wait for that thread forever at shutdown and the process would never exit.
        stop.set()
        for task in background:
            task.cancel()
        await runner.cleanup()
        if metrics is not None:  # an operator stopped in-process (tests) frees its port
            metrics.shutdown()
            metrics.server_close()
        api.close()


def run(config: OperatorConfig, verbose: bool = False) -> int:
    setup_logging(verbose)
    stop = threading.Event()
    try:
        asyncio.run(serve(config, stop))
    except KeyboardInterrupt:
        stop.set()
    return 0
