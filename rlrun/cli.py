"""The `rlrun` command: a thin layer over library functions.

    rlrun version
    rlrun local examples/color-codeword.yaml      # the whole run as local processes
    rlrun render examples/color-codeword.yaml     # the Kubernetes children the operator would create
    rlrun crd                                     # the generated CustomResourceDefinition
    rlrun operator [--namespace NS]               # run the operator (kopf)
    rlrun submit run.yaml --request-id ID --wait  # from a platform: submit, get, list, watch, wait,
                                                  # logs, cancel, result (cluster, or --local DIR)

Heavy imports (kopf, torch) happen inside each subcommand so `rlrun --help` stays instant and the
operator image never needs torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from rlrun import __version__

Command = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command]] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register a subcommand; `configure` adds its arguments."""

    def register(fn: Command) -> Command:
        _COMMANDS[name] = (help, configure, fn)
        return fn

    return register


@command("version", "print the rlrun version")
def _version(_: argparse.Namespace) -> int:
    print(__version__)
    return 0


def build_parser() -> argparse.ArgumentParser:
    import rlrun.cmd  # noqa: F401  (registers the other subcommands)
    from rlrun.client.errors import exit_code_help

    parser = argparse.ArgumentParser(
        prog="rlrun",
        description=__doc__.split("\n\n")[0],
        epilog="exit codes (submit, get, list, watch, wait, logs, cancel, result):\n" + exit_code_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rlrun {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, configure, fn) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        configure(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
