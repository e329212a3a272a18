"""What can go wrong for a caller of `rlrun.client`, each with the process exit code the CLI returns.

A platform branches on the exception class (Python) or the exit code (a pipeline step); the message says
what to do next. `ExitCode` is the one table of exit codes: `rlrun --help` and the README list it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of `rlrun submit|get|list|watch|wait|logs|cancel|result`; meanings in EXIT_CODE_MEANINGS."""

    SUCCEEDED = 0
    FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    TIMED_OUT = 4
    FORBIDDEN = 5
    CONFLICT = 6
    UNAVAILABLE = 7


EXIT_CODE_MEANINGS = {
    ExitCode.SUCCEEDED: "done; for wait, watch and submit --wait: the run Succeeded",
    ExitCode.FAILED: "the run ended in phase Failed",
    ExitCode.USAGE: "bad arguments or file, or the spec was rejected (client validation or admission)",
    ExitCode.NOT_FOUND: "no such run (or it was deleted while waiting), or the RLRun CRD is not installed",
    ExitCode.TIMED_OUT: "--timeout passed before a terminal phase (the run keeps going)",
    ExitCode.FORBIDDEN: "RBAC denies the verb on rlruns, or the credentials were refused",
    ExitCode.CONFLICT: "the request id already made a run with another spec, or the name is taken",
    ExitCode.UNAVAILABLE: "the API server (or local launcher) is unreachable or answered an unexpected error",
}


def exit_code_help() -> str:
    """The exit-code table as `rlrun --help` prints it."""
    return "\n".join(f"  {int(c)}  {c.name.lower():<13}{EXIT_CODE_MEANINGS[c]}" for c in ExitCode)


class ClientError(Exception):
    """Base of every error `rlrun.client` raises on purpose."""

    exit_code: ExitCode = ExitCode.UNAVAILABLE


class RunNotFound(ClientError):
    exit_code = ExitCode.NOT_FOUND

    def __init__(self, name: str, namespace: str | None, detail: str = "") -> None:
        where = f" in namespace {namespace!r}" if namespace else ""
        super().__init__(f"rlrun {name!r} not found{where}{detail}: check the name (`rlrun list`)")
        self.name, self.namespace = name, namespace


class RunDeleted(RunNotFound):
    """The run disappeared while it was watched or waited on (cancelled, or removed by its TTL)."""

    def __init__(self, name: str, namespace: str | None) -> None:
        ClientError.__init__(
            self,
            f"rlrun {name!r} was deleted before it reached a terminal phase (cancelled, or deleted by "
            "someone else)",
        )
        self.name, self.namespace = name, namespace


class CRDNotInstalled(ClientError):
    exit_code = ExitCode.NOT_FOUND

    def __init__(self, server: str) -> None:
        super().__init__(
            f"the RLRun CRD (rlruns.rlrun.dev) is not installed on {server}: install the operator first "
            "(`helm install rlrun helm/rlrun` or `kubectl apply --server-side -f manifests/crd/`)"
        )


class Forbidden(ClientError):
    """RBAC refused the verb, or the server refused the credentials (401)."""

    exit_code = ExitCode.FORBIDDEN


class SpecRejected(ClientError):
    """The spec is invalid: `field_errors` lists (field path, message) as the validator reported them."""

    exit_code = ExitCode.USAGE

    def __init__(self, summary: str, field_errors: list[tuple[str, str]]) -> None:
        lines = [summary, *(f"  {f}: {m}" if f else f"  {m}" for f, m in field_errors)]
        super().__init__("\n".join(lines))
        self.field_errors = field_errors


class RequestConflict(ClientError):
    exit_code = ExitCode.CONFLICT


class WaitTimeout(ClientError):
    """`wait` ran out of time; `last` is the run as last seen (it keeps running)."""

    exit_code = ExitCode.TIMED_OUT

    def __init__(self, name: str, timeout: float, last: object) -> None:
        super().__init__(f"rlrun {name!r} did not finish within {timeout:g}s (it keeps running)")
        self.name, self.timeout, self.last = name, timeout, last


class Unavailable(ClientError):
    exit_code = ExitCode.UNAVAILABLE


class InvalidArgument(ClientError):
    """An argument the client cannot use (unknown component, ...)."""

    exit_code = ExitCode.USAGE


class NoPods(ClientError):
    """The run exists but has no pod of the asked component now (not created yet, or released)."""

    exit_code = ExitCode.NOT_FOUND
