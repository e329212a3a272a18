"""`rlrun submit|get|list|watch|wait|logs|cancel|result`: the Python client (rlrun.client) as commands.

Each command talks to the cluster of the kubeconfig (or the pod's ServiceAccount), or with `--local DIR`
to runs started by `rlrun local` under DIR. Errors print one actionable message and exit with the code of
rlrun.client.errors.ExitCode, so a pipeline step can branch on it.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlrun.cli import command

OUTPUTS = ("table", "json", "yaml")
DEFAULT_TIMEOUT = 86400.0


def _common(p: argparse.ArgumentParser, output: bool = True) -> None:
    where = p.add_argument_group("where the runs are")
    where.add_argument(
        "-n", "--namespace", help="namespace (default: the kubeconfig context's, else 'default')"
    )
    where.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)"
    )
    where.add_argument(
        "--local", type=Path, metavar="DIR", help="use runs of `rlrun local` under DIR instead of a cluster"
    )
    if output:
        p.add_argument(
            "-o", "--output", choices=OUTPUTS, default="table", help="output format (default table)"
        )


def _name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the RLRun's name")


def _timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for a terminal phase (default {DEFAULT_TIMEOUT:g}); exit 4 when it passes",
    )


def _client(args: argparse.Namespace, **cluster: Any) -> Any:
    """The local client (--local), else the cluster client (with the `cluster` options)."""
    if args.local is not None:
        from rlrun.client.local import LocalClient

        return LocalClient(args.local)
    from rlrun.client.cluster import Client

    return Client(args.namespace, kubeconfig=args.kubeconfig, **cluster)


def _handled(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """ClientError -> its message on stderr and its exit code."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        from rlrun.client.errors import ClientError

        try:
            return fn(args)
        except ClientError as e:
            print(f"error: {e}", file=sys.stderr)
            return int(e.exit_code)

    return run


# ------------------------------------------------------------------------------------------- output


def _row(run: Any) -> list[str]:
    st = run.status
    p = st.progress if st else None
    step = f"{p.step}/{p.max_steps}" if p and p.step is not None else "-"
    reward = f"{p.reward_mean:.3f}" if p and p.reward_mean is not None else "-"
    return [
        run.metadata.name,
        (st.phase if st else None) or "-",
        step,
        reward,
        str((st.restarts if st else 0) or 0),
        (st.reason if st else None) or "",
    ]


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]
    )


RUN_HEADER = ["NAME", "PHASE", "STEP", "REWARD", "RESTARTS", "REASON"]


def _dump(obj: Any) -> Any:
    """JSON-ready form of a run, result, event or outcome."""
    from dataclasses import asdict, is_dataclass

    from pydantic import BaseModel

    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json", by_alias=True, exclude_none=True)
    if is_dataclass(obj) and not isinstance(obj, type):
        return {k: _dump(getattr(obj, k)) for k in asdict(obj)}
    if isinstance(obj, list):
        return [_dump(o) for o in obj]
    return obj


def _emit(data: Any, output: str) -> None:
    if output == "json":
        print(json.dumps(_dump(data), indent=2))
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(_dump(data), sort_keys=False))


def _print_runs(runs: list[Any], output: str) -> None:
    if output == "table":
        print(_table([_row(r) for r in runs], RUN_HEADER))
    else:
        _emit(runs if len(runs) != 1 else runs[0], output)


def _wait(client: Any, name: str, timeout: float, output: str) -> int:
    """Wait with a live progress bar on stderr; print the outcome; exit 0 Succeeded / 1 Failed."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rlrun.client.errors import ExitCode

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[phase]}  reward {task.fields[reward]}  restarts {task.fields[restarts]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    task = bar.add_task(name, total=None, phase="-", reward="-", restarts=0)

    def show(event: Any) -> None:
        p, st = event.progress, event.run.status
        bar.update(
            task,
            total=p.max_steps if p and p.max_steps else None,
            completed=(p.step or 0) if p else 0,
            phase=event.phase or "-",
            reward=f"{p.reward_mean:.3f}" if p and p.reward_mean is not None else "-",
            restarts=(st.restarts or 0) if st else 0,
        )

    with bar:
        outcome = client.wait(name, timeout, on_event=show)
    _print_runs([outcome.run], output)
    return int(ExitCode.SUCCEEDED if outcome.succeeded else ExitCode.FAILED)


# ----------------------------------------------------------------------------------------- commands


def _submit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="RLRun YAML (the file `kubectl apply` and `rlrun local` take)")
    p.add_argument("--name", help="run name (default: <metadata.name>-<hash of the request id> with "
                   "--request-id, else metadata.name)")  # fmt: skip
    p.add_argument(
        "--request-id",
        help="idempotency key: the same id always yields the same run (safe to retry); the same id with "
        "a different spec exits 6",
    )
    p.add_argument("--wait", action="store_true", help="then wait like `rlrun wait` (exit 0/1/4)")
    _timeout(p)
    _common(p)


@command("submit", "create an RLRun from a file (idempotent with --request-id)", _submit_args)
@_handled
def submit(args: argparse.Namespace) -> int:
    client = _client(args)
    run = client.submit(args.file, args.name, request_id=args.request_id)
    if args.wait:
        return _wait(client, run.metadata.name, args.timeout, args.output)
    _print_runs([run], args.output)
    return 0


def _get_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    _common(p)


@command("get", "show one RLRun (phase, step, reward, restarts)", _get_args)
@_handled
def get(args: argparse.Namespace) -> int:
    _print_runs([_client(args).get(args.name)], args.output)
    return 0


def _list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-l", "--selector", help="label selector, e.g. team=a")
    _common(p)


@command("list", "list RLRuns", _list_args)
@_handled
def list_(args: argparse.Namespace) -> int:
    runs = _client(args).list(args.selector)
    if args.output == "table":
        print(_table([_row(r) for r in runs], RUN_HEADER))
    else:
        _emit(runs, args.output)
    return 0


def _watch_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    _timeout(p)
    _common(p)


@command("watch", "print a line per change of phase, progress or conditions until the run ends", _watch_args)
@_handled
def watch(args: argparse.Namespace) -> int:
    from rlrun.client.errors import ExitCode, RunDeleted, WaitTimeout

    last = None
    for event in _client(args).watch(args.name, timeout=args.timeout):
        last = event
        if args.output == "table":
            print(event.describe(), flush=True)
        else:
            record = {"type": event.type, "changed": list(event.changed), "run": _dump(event.run)}
            if args.output == "json":
                print(json.dumps(record), flush=True)
            else:
                import yaml

                sys.stdout.write("---\n" + yaml.safe_dump(record, sort_keys=False))
                sys.stdout.flush()
    if last is None or not last.terminal:
        raise WaitTimeout(args.name, args.timeout, last.run if last else None)
    if last.type == "DELETED":
        raise RunDeleted(args.name, last.run.metadata.namespace)
    return int(ExitCode.SUCCEEDED if last.phase == "Succeeded" else ExitCode.FAILED)


@command("wait", "wait for a terminal phase with a progress display; exit 0 Succeeded, 1 Failed", _watch_args)
@_handled
def wait(args: argparse.Namespace) -> int:
    return _wait(_client(args), args.name, args.timeout, args.output)


def _logs_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("-c", "--component", default="orchestrator",
                   help="orchestrator (default), trainer (rank 0's pod), inference or env-workers")  # fmt: skip
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming")
    p.add_argument("--attempt", type=int, help="that restart attempt's log (default: the current attempt)")
    p.add_argument("--reader-timeout", type=float,
                   help="cluster: seconds the pod reading an ended attempt's logs from the run volume may "
                        "take (default: rlrun.client.cluster.LOG_READER_TIMEOUT)")  # fmt: skip
    _common(p, output=False)


@command("logs", "print a component's log", _logs_args)
@_handled
def logs(args: argparse.Namespace) -> int:
    timeout = {} if args.reader_timeout is None else {"log_reader_timeout": args.reader_timeout}
    client = _client(args, **timeout)
    for line in client.logs(args.name, args.component, follow=args.follow, attempt=args.attempt):
        print(line, flush=args.follow)
    return 0


def _cancel_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait until it is gone (default 60)"
    )
    _common(p, output=False)


@command(
    "cancel",
    "stop a run for good: deletes the RLRun and, through ownership, its pods and its <run>-assets volume "
    "(an existingClaim stays); locally stops every process and keeps the output directory",
    _cancel_args,
)
@_handled
def cancel(args: argparse.Namespace) -> int:
    _client(args).cancel(args.name, timeout=args.timeout)
    print(f"rlrun {args.name} cancelled")
    return 0


@command("result", "where a run's final weights and samples are, its last progress and restarts", _get_args)
@_handled
def result(args: argparse.Namespace) -> int:
    res = _client(args).result(args.name)
    if args.output != "table":
        _emit(res, args.output)
        return 0
    p = res.progress
    rows = [
        ("name", res.name),
        ("phase", f"{res.phase or '-'}{f' ({res.reason})' if res.reason else ''}"),
        ("step", f"{p.step}/{p.max_steps}" if p and p.step is not None else "-"),
        ("reward", f"{p.reward_mean:.3f}" if p and p.reward_mean is not None else "-"),
        ("restarts", str(res.restarts)),
        ("volume", res.volume_claim or "(local disk)"),
        ("run dir", res.run_dir),
        ("final weights", res.final_weights or "-"),
        ("samples", res.samples),
    ]
    print("\n".join(f"{k + ':':<15}{v}" for k, v in rows))
    return 0
