"""`rlrun render FILE` (the children the operator would create) and `rlrun crd` (the generated CRD)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlrun.cli import command


def _render_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="RLRun YAML (one or more documents); '-' reads stdin")
    p.add_argument("-n", "--namespace", help="namespace to render into (default: the file's, else none)")
    p.add_argument("--trainer-attempt", type=int, default=0, help="trainer group attempt (default 0)")
    p.add_argument("--orchestrator-attempt", type=int, default=0, help="orchestrator attempt (default 0)")
    p.add_argument(
        "--progress-url",
        help="base URL pods reach the operator's progress endpoint at (the operator's --progress-url)",
    )


@command(
    "render",
    "print every Kubernetes child of an RLRun as a YAML stream: exactly what the operator creates "
    "(the progress Secret gets a fresh random token, as for a new run)",
    _render_args,
)
def render(args: argparse.Namespace) -> int:
    import secrets

    import yaml
    from pydantic import ValidationError

    from rlrun.operator.api import RLRun
    from rlrun.operator.crd import dump_yaml_stream
    from rlrun.operator.render import render_children

    text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
    children = []
    for i, doc in enumerate(d for d in yaml.safe_load_all(text) if d):
        if args.namespace:
            doc.setdefault("metadata", {})["namespace"] = args.namespace
        try:
            run = RLRun.model_validate(doc)
        except ValidationError as e:
            print(f"{args.file} (document {i}): invalid RLRun:\n{e}", file=sys.stderr)
            return 2
        children += render_children(
            run,
            trainer_attempt=args.trainer_attempt,
            orchestrator_attempt=args.orchestrator_attempt,
            progress_url=args.progress_url,
            progress_token=secrets.token_urlsafe(32),
        )
    sys.stdout.write(dump_yaml_stream(children))
    return 0


def _crd_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--write",
        action="store_true",
        help="write the CRD into manifests/crd and helm/rlrun/crds and sync manifests/examples",
    )
    p.add_argument("--root", type=Path, default=Path("."), help="repository root for --write (default: .)")


@command(
    "crd", "print (or --write) the RLRun CustomResourceDefinition generated from the API models", _crd_args
)
def crd(args: argparse.Namespace) -> int:
    from rlrun.operator.crd import crd_yaml, write_generated

    if not args.write:
        sys.stdout.write(crd_yaml())
        return 0
    for path in write_generated(args.root):
        print(f"wrote {path}")
    return 0
