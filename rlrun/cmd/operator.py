"""`rlrun operator`: run the kopf operator (see rlrun.operator.main for the exact commands)."""

from __future__ import annotations

import argparse

from rlrun.cli import command


def _configure(p: argparse.ArgumentParser) -> None:
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", default=[], help="watch only this namespace (repeatable)"
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)"
    )
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    p.add_argument("--liveness-port", type=int, help="serve kopf's liveness probe at :PORT/healthz")
    p.add_argument(
        "--progress-port", type=int, default=8081, help="port of the progress endpoint (default 8081)"
    )
    p.add_argument(
        "--progress-url", help="base URL pods use to reach the progress endpoint (operator Service)"
    )
    p.add_argument("--interval", type=float, default=10.0, help="seconds between level-based passes per run")
    p.add_argument("--stall-factor", type=float, default=5.0, help="stalled after N x the median step time")
    p.add_argument("--stall-floor-seconds", type=float, default=300.0, help="...but never sooner than this")
    p.add_argument("--peering", help="kopf peering object for HA (several replicas, one active)")
    p.add_argument(
        "--peering-lifetime",
        type=int,
        default=60,
        help="seconds a replica's peering keep-alive lasts: a standby takes over this long after the "
        "active replica died (default 60)",
    )
    p.add_argument(
        "--priority", type=int, help="peering priority of this replica (default: a distinct random one)"
    )
    p.add_argument("--verbose", "-v", action="store_true")


@command("operator", "run the rlrun operator (kopf)", _configure)
def _operator(args: argparse.Namespace) -> int:
    from rlrun.operator.main import OperatorConfig, run
    from rlrun.operator.restarts import StallPolicy

    config = OperatorConfig(
        namespaces=[] if args.all_namespaces else args.namespace,
        kubeconfig=args.kubeconfig,
        progress_port=args.progress_port,
        progress_url=args.progress_url,
        metrics_port=args.metrics_port,
        liveness_port=args.liveness_port,
        interval_seconds=args.interval,
        stall=StallPolicy(args.stall_factor, args.stall_floor_seconds),
        peering=args.peering,
        priority=args.priority,
        peering_lifetime=args.peering_lifetime,
    )
    return run(config, verbose=args.verbose)
