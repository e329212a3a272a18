"""`rlrun-podlog -- COMMAND...`: a pod's role logs that outlive the pod.

The operator starts every container of a run through this wrapper (operator/render/common.py). It runs
COMMAND as its child and copies the child's stdout and stderr to its own (so `kubectl logs` and the
container's termination message are unchanged) and also to `<run>/logs/attempt-<n>/<component>-<pod>.log`
on the run volume, size-bounded by rotation (runtime/logrotate.py). A failed attempt's logs are therefore
readable after its pods are deleted: `rlrun-podlog read` prints them (what `rlrun logs --attempt` runs in a
reader pod on the volume), exactly as `rlrun local` keeps every attempt's logs.

The wrapper is the container's PID 1, so it also does PID 1's work:
- every signal a pod gets (SIGTERM on deletion/preemption, SIGINT, SIGHUP, SIGQUIT, SIGUSR2) goes to the
  child unchanged: the trainer's checkpoint-on-SIGTERM grace still works;
- SIGUSR1 (the stack-dump signal, runtime/stackdump.py) goes to every process of the pod that handles it
  (each role, each trainer rank; not torchrun, which would die of it), so `kill -USR1 1` in a pod dumps
  all of them into `forensics/attempt-<n>/`; SIGTERM does the same first, so a pod deleted while hung
  (the operator restarts a Stalled trainer group by deleting its pods) leaves every process's stacks at
  the moment it was stopped, which the operator's Stalled Event points to;
- it is a child subreaper: orphans of the role are re-parented to it and reaped; when the child exits,
  whatever it left behind gets SIGTERM, then SIGKILL after LEFTOVER_GRACE_SECONDS, so no process of ours
  survives the role even outside a container;
- it exits with the child's code (128 + n when the child died of signal n, as a shell reports it).

The volume never stalls the role: file writes go through a bounded queue on their own thread, and a volume
that cannot keep up (or cannot be written at all) costs file lines, counted in the file, never console
output. Attempt, component and pod come from the pod contract's env (RLRUN_ATTEMPT, RLRUN_COMPONENT,
RLRUN_POD_NAME from the downward API); servers, which are not restarted as attempts, log under attempt 0.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import queue
import selectors
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from rlrun import pod_contract
from rlrun.runtime import stackdump
from rlrun.runtime.config import RuntimeConfig, attempt_log_dir, check_safe_id, log_attempts
from rlrun.runtime.logrotate import rotate_if_larger

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
LEFTOVER_GRACE_SECONDS = 5.0
"""How long processes the role left behind get between SIGTERM and SIGKILL once the role has exited."""
QUEUE_CHUNKS = 1024
"""Chunks (<= 64 KiB each) waiting for the volume before further output skips the file."""
_PR_SET_CHILD_SUBREAPER = 36
READ_BYTES = 65536
"""The most the wrapper reads from the role at once: a log file exceeds max_bytes by at most this."""


def log_path(run_dir: Path, attempt: int, component: str, pod: str) -> Path:
    """`<run_dir>/logs/attempt-<n>/<component>-<pod>.log`: one file per pod of a role and attempt."""
    check_safe_id(component, "component")
    check_safe_id(pod, "pod name")
    return attempt_log_dir(run_dir, attempt) / f"{component}-{pod}.log"


def component_logs(run_dir: Path, attempt: int, component: str) -> list[Path]:
    """The pods' log files of `component` in `attempt` (rotated parts `.log.1`... not included)."""
    check_safe_id(component, "component")
    return sorted(attempt_log_dir(run_dir, attempt).glob(f"{component}-*.log"))


def attempts_with_logs(run_dir: Path, component: str) -> list[int]:
    return [n for n in log_attempts(run_dir) if component_logs(run_dir, n, component)]


class NoLogs(LookupError):
    """No log of that component (and attempt) on the volume."""


def read_logs(run_dir: Path, component: str, attempt: int | None = None) -> tuple[int, list[Path]]:
    """(attempt, files) of `component`'s logs: of `attempt`, else of the newest attempt that has one."""
    attempts = attempts_with_logs(run_dir, component)
    if attempt is None and attempts:
        attempt = attempts[-1]
    if attempt is None or attempt not in attempts:
        which = f" of attempt {attempt}" if attempt is not None else ""
        raise NoLogs(
            f"no {component} log{which} under {run_dir / 'logs'}; attempts with one: {attempts or 'none'}"
        )
    return attempt, component_logs(run_dir, attempt, component)


def open_log(path: Path) -> IO[bytes]:
    """`path` for appending, refusing anything but a regular file: a symlink or FIFO planted on the shared
    volume (by code an env-worker runs, say) neither redirects our writes nor blocks the open."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "ab")
    except BaseException:
        os.close(fd)
        raise


class _FileSink:
    """The volume side: a thread appending queued chunks to the log file, rotating it past max_bytes."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file: IO[bytes] = open_log(path)
        self.queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_CHUNKS)
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, name="podlog-file", daemon=True)
        self.thread.start()

    def put(self, chunk: bytes) -> None:
        try:
            self.queue.put_nowait(chunk)
        except queue.Full:
            self.dropped += len(chunk)

    def _run(self) -> None:
        reported = 0
        while (chunk := self.queue.get()) is not None:
            try:
                if self.dropped > reported:
                    note = f"\n[rlrun-podlog: {self.dropped - reported} bytes not written here: the volume was slow]\n"
                    self.file.write(note.encode())
                    reported = self.dropped
                if self.file.tell() + len(chunk) > self.max_bytes:
                    # before the write, so the live file always ends with the newest output; a file over
                    # max_bytes is then only ever one oversized chunk
                    rotate_if_larger(self.path, 0, self.backups)
                self.file.write(chunk)
                self.file.flush()
            except OSError as e:
                print(
                    f"rlrun-podlog: writing {self.path} failed, console only from now: {e}", file=sys.stderr
                )
                return

    def close(self, timeout: float) -> None:
        with contextlib.suppress(queue.Full):
            self.queue.put(None, timeout=timeout)
        self.thread.join(timeout)
        with contextlib.suppress(OSError):
            self.file.close()


def pod_log(environ: Mapping[str, str]) -> tuple[Path, RuntimeConfig]:
    """(log file, runtime config) of the pod whose env is `environ` (the pod contract's variables)."""
    cfg = RuntimeConfig.load(environ=environ)
    component = environ.get(pod_contract.COMPONENT_ENV) or ""
    pod = environ.get(pod_contract.POD_NAME_ENV) or socket.gethostname()
    attempt = int(environ.get(pod_contract.ATTEMPT_ENV) or 0)
    return log_path(cfg.run_dir, attempt, component, pod), cfg


def _open_sink(environ: Mapping[str, str]) -> _FileSink | None:
    """The volume log of this pod, or None (with one line on stderr saying why) when it cannot be had."""
    try:
        path, cfg = pod_log(environ)
        return _FileSink(path, cfg.logs.max_bytes, cfg.logs.backups)
    except (OSError, ValueError) as e:
        print(f"rlrun-podlog: no log on the run volume (console only): {e}", file=sys.stderr)
        return None


def _pump(pipes: dict[int, IO[bytes]], sink: _FileSink | None) -> None:
    """Copy the child's pipes to our console streams and the sink until both reach EOF."""
    sel = selectors.DefaultSelector()
    for fd, console in pipes.items():
        sel.register(fd, selectors.EVENT_READ, console)
    while sel.get_map():
        for key, _ in sel.select():
            chunk = os.read(key.fd, READ_BYTES)
            if not chunk:
                sel.unregister(key.fd)
                os.close(key.fd)
                continue
            with contextlib.suppress(OSError):
                key.data.write(chunk)
                key.data.flush()
            if sink is not None:
                sink.put(chunk)


def _processes() -> dict[int, int]:
    """pid -> parent pid of every live (not zombie) process we can see (from /proc: the wrapper must run
    where psutil may be missing)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            out[int(entry)] = int(fields[1])
    return out


def _children(pid: int) -> list[int]:
    """Live direct children of `pid`."""
    return [p for p, parent in _processes().items() if parent == pid]


def _descendants(pid: int) -> list[int]:
    table = _processes()
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in table.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


def _catches(pid: int, sig: int) -> bool:
    """Does `pid` handle `sig` (its SigCgt mask), rather than die of it?"""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


def dump_stacks() -> list[int]:
    """Ask every process under us that handles the dump signal (each role and trainer rank registers it,
    runtime/stackdump.py) for its stacks; return their pids. Processes that do not handle it (torchrun)
    are left alone: the signal would kill them."""
    asked = []
    for pid in _descendants(os.getpid()):
        if _catches(pid, stackdump.DUMP_SIGNAL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, stackdump.DUMP_SIGNAL)
                asked.append(pid)
    return asked


def _reap() -> None:
    """Collect exited orphans re-parented to us (never the child: Popen waits for that one)."""
    with contextlib.suppress(ChildProcessError):
        while True:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if info is None or info.si_pid == _child_pid:
                return
            os.waitpid(info.si_pid, 0)


_child_pid = -1


def _end_leftovers(grace: float) -> None:
    """SIGTERM what the role left behind (re-parented to us), SIGKILL it after `grace`, reap it."""
    me = os.getpid()
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        left = _children(me)
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _children(me):
            _reap()
            time.sleep(0.05)
        _reap()


def supervise(argv: Sequence[str], environ: dict[str, str] | None = None) -> int:
    """Run `argv` with its output teed to the console and the volume; return its exit code."""
    global _child_pid
    environ = dict(os.environ if environ is None else environ)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    sink = _open_sink(environ)
    child = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ, process_group=0
    )
    _child_pid = child.pid

    def forward(signum: int, _frame: object) -> None:
        if signum in (stackdump.DUMP_SIGNAL, signal.SIGTERM):
            dump_stacks()  # SIGTERM too: a pod stopped while hung (Stalled) leaves the hang's stacks
        if signum != stackdump.DUMP_SIGNAL:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    assert child.stdout is not None and child.stderr is not None
    pipes = {
        os.dup(child.stdout.fileno()): sys.stdout.buffer,
        os.dup(child.stderr.fileno()): sys.stderr.buffer,
    }
    child.stdout.close()
    child.stderr.close()
    pump = threading.Thread(target=_pump, args=(pipes, sink), name="podlog-pump", daemon=True)
    pump.start()
    while True:
        try:
            code = child.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            _reap()
    _end_leftovers(LEFTOVER_GRACE_SECONDS)
    pump.join(LEFTOVER_GRACE_SECONDS)
    if sink is not None:
        sink.close(LEFTOVER_GRACE_SECONDS)
    return 128 - code if code < 0 else code


def _read(args: argparse.Namespace) -> int:
    run_dir = args.run_dir or RuntimeConfig.load().run_dir
    try:
        attempt, paths = read_logs(run_dir, args.component, args.attempt)
    except NoLogs as e:
        print(f"{pod_contract.NO_LOGS_MARK} {e}", file=sys.stderr)
        return pod_contract.NO_LOGS_EXIT
    print(f"{pod_contract.LOG_ATTEMPT_MARK} {attempt}", flush=True)
    for path in paths:
        with path.open("rb") as f:
            while chunk := f.read(READ_BYTES):
                sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [pod_contract.LOG_READER[1]]:
        p = argparse.ArgumentParser(prog="rlrun-podlog read", description="print a component's volume log")
        p.add_argument("--run-dir", type=Path, help="the run directory (default: the config's)")
        p.add_argument("--component", required=True)
        p.add_argument("--attempt", type=int)
        return _read(p.parse_args(argv[1:]))
    command = child_argv(argv)
    return supervise(command)


def child_argv(argv: Sequence[str]) -> list[str]:
    """The wrapped command: everything after the `--` that must come first."""
    if argv[:1] != ["--"] or len(argv) < 2:
        raise SystemExit(
            "usage: rlrun-podlog -- COMMAND [ARG...]  |  rlrun-podlog read --component C [--attempt N]"
        )
    return list(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
