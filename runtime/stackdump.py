"""Hang diagnosis: stack dumps of every process of a run, and which one looks like the culprit.

Every role (and every trainer rank) calls `install` first thing: it opens its dump file on the run volume,
`forensics/attempt-<n>/<name>-<pid>.stacks`, and registers faulthandler on SIGUSR1, so anything may ask
the process for all its threads' stacks (`rlrun local` does on a stall) without stopping it, and the
process may dump itself (`dump_now`, the trainer's peer watch does on a silent peer). faulthandler writes
from its signal handler in C, so a process whose Python code is blocked (a collective, a socket read)
still answers; only a process that cannot run at all (SIGSTOPped) or that is wedged holding the GIL in
native code leaves no dump, and that absence is itself the strongest sign of the culprit.

`diagnose` is pure: it reads the dumps' text, puts each process in a category (in a collective, waiting
on a socket, in the data loader, running) and names the suspect: a process that did not answer, else the
one whose category differs from all others'.
"""

from __future__ import annotations

import faulthandler
import json
import os
import re
import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from rlrun import pod_contract
from rlrun.runtime.config import STACKS_SUMMARY_MAX, forensics_dir

DUMP_SIGNAL = signal.SIGUSR1
REPORT_FILE = "hang.json"
_DUMP_NAME = re.compile(r"^(?P<name>[a-z0-9-]+)-(?P<pid>[0-9]+)\.stacks$")
_files: list[IO[str]] = []  # open for the life of the process: faulthandler writes to their fds
# (category, path fragments of a frame's file, function names or None for any), most specific first
_CATEGORIES: list[tuple[str, tuple[str, ...], tuple[str, ...] | None]] = [
    ("in a collective", ("torch/distributed/",), None),
    (
        "in the data loader",
        ("/runtime/transport/", "/runtime/mm/", "/runtime/trainer/batches"),
        None,
    ),
    ("waiting on a socket", ("zmq/", "socket.py", "ssl.py", "httpx/", "httpcore/", "selectors.py"), None),
]
_OURS = (
    "/runtime/trainer/peerwatch.py",
    "/runtime/transport/watchdog.py",
    "/runtime/lifetime.py",
)


def dump_dir(run_dir: Path, attempt: int) -> Path:
    return forensics_dir(run_dir, attempt)


def install(run_dir: Path, attempt: int, name: str) -> Path:
    """Register this process's stack dump on DUMP_SIGNAL, into `<dump_dir>/<name>-<pid>.stacks`."""
    directory = dump_dir(run_dir, attempt)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{os.getpid()}.stacks"
    f = path.open("a")
    _files.append(f)
    faulthandler.register(DUMP_SIGNAL, file=f, all_threads=True, chain=False)
    return path


def install_role(run_dir: Path, name: str) -> Path:
    """`install` for a role process, under the attempt the operator (or `rlrun local`) gave it."""
    return install(run_dir, int(os.environ.get(pod_contract.ATTEMPT_ENV) or 0), name)


def dump_now(why: str) -> None:
    """Write every thread's stack into this process's dump file (from any thread)."""
    if not _files:
        return
    f = _files[-1]
    f.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()}: {why}\n")
    f.flush()
    faulthandler.dump_traceback(file=f, all_threads=True)
    f.flush()


def registered(directory: Path) -> dict[int, str]:
    """pid -> name of every process that installed a dump handler under `directory`."""
    out = {}
    for path in directory.glob("*.stacks") if directory.is_dir() else []:
        if m := _DUMP_NAME.match(path.name):
            out[int(m.group("pid"))] = m.group("name")
    return out


def category(stacks: str) -> str:
    """What the dumped process was doing: the most specific category any of its threads is in (our own
    watch threads and idle pool threads do not count)."""
    found = set()
    for block in re.split(r"\n(?=(?:Current thread|Thread) 0x)", stacks):
        frames = re.findall(r'File "([^"]+)", line \d+ in (\S+)', block)
        if not frames or any(ours in file for file, _ in frames for ours in _OURS):
            continue
        for name, fragments, functions in _CATEGORIES:
            if any(
                frag in file and (functions is None or fn in functions)
                for file, fn in frames
                for frag in fragments
            ):
                found.add(name)
                break
    for name, _, _ in _CATEGORIES:
        if name in found:
            return name
    return "running"


@dataclass
class Diagnosis:
    summary: str
    culprit: str | None
    why: str
    categories: dict[str, str]
    """process name -> category; 'no dump' for one that did not answer."""


def diagnose(dumps: dict[str, str | None], silent: dict[str, str] | None = None) -> Diagnosis:
    """Name the suspect among processes `dumps` (name -> stack text, None when it left no dump);
    `silent` (name -> why) are processes already known not to run (no heartbeat, stopped)."""
    silent = dict(silent or {})
    for name, text in dumps.items():
        if not text and name not in silent:
            silent[name] = "left no stack dump (stopped, or wedged holding the GIL)"
    categories = {n: ("no dump" if n in silent else category(t or "")) for n, t in dumps.items()}
    if silent:
        culprit = sorted(silent)[0]
        why = silent[culprit]
    else:
        counts = Counter(categories.values())
        odd = [n for n, c in categories.items() if counts[c] == 1] if len(counts) > 1 else []
        culprit = odd[0] if len(odd) == 1 else None
        why = (
            f"{categories[culprit]} while the others are {Counter(c for n, c in categories.items() if n != culprit).most_common(1)[0][0]}"
            if culprit
            else "no process stands out"
        )
    summary = f"suspected culprit: {culprit} ({why})" if culprit else f"no single culprit: {why}"
    return Diagnosis(summary, culprit, why, categories)


def write_report(directory: Path, reason: str, diagnosis: Diagnosis) -> Path:
    """`<directory>/hang.json`, atomically: why the dumps were taken and what they suggest."""
    path = directory / REPORT_FILE
    tmp = directory / f".{REPORT_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"reason": reason, **asdict(diagnosis)}, indent=1))
    os.replace(tmp, path)
    return path


TRAINER_PREFIX = "trainer-rank"


def diagnose_stopped_attempt(run_dir: Path, attempt: int) -> str | None:
    """What the trainer processes of `attempt` were doing when they were stopped: each pod's log wrapper
    (runtime/podlog.py) has them dump their stacks on SIGTERM, so a group the operator restarted because it
    stalled leaves the hang's stacks, but no process was left to compare them. The next attempt does it at
    its start: it writes `hang.json` beside the dumps and returns one line for status (the operator turns
    it into an Event). None when that attempt left no dump (it crashed rather than being stopped) or when
    its report exists already (the peer watch writes its own when it catches a silent rank)."""
    directory = dump_dir(run_dir, attempt)
    if (directory / REPORT_FILE).exists():
        return None
    names = {pid: n for pid, n in registered(directory).items() if n.startswith(TRAINER_PREFIX)}
    dumps = read_dumps(directory, names)
    if not any(dumps.values()):
        return None
    diagnosis = diagnose(dumps)
    report = write_report(directory, f"trainer attempt {attempt} stopped (SIGTERM)", diagnosis)
    text = f"{diagnosis.summary}; stacks of every trainer process in {directory}/ ({report.name})"
    if len(text) <= STACKS_SUMMARY_MAX:
        return text
    half = (STACKS_SUMMARY_MAX - 5) // 2  # a deep asset root must shorten the line, not fail the start
    return f"{text[:half]} ... {text[-half:]}"


def label(name: str, pid: int) -> str:
    return f"{name} (pid {pid})"


def read_dumps(
    directory: Path, names: dict[int, str], offsets: dict[int, int] | None = None
) -> dict[str, str | None]:
    """label -> the dump text of each pid in `names` past `offsets[pid]` (None when there is none)."""
    out: dict[str, str | None] = {}
    for pid, name in names.items():
        try:
            with (directory / f"{name}-{pid}.stacks").open("rb") as f:
                f.seek((offsets or {}).get(pid, 0))
                text = f.read().decode(errors="replace")
        except OSError:
            text = ""
        out[label(name, pid)] = text or None
    return out


def sizes(directory: Path, names: dict[int, str]) -> dict[int, int]:
    """pid -> current size of its dump file (the offsets for reading only the next dump)."""
    out = {}
    for pid, name in names.items():
        try:
            out[pid] = (directory / f"{name}-{pid}.stacks").stat().st_size
        except OSError:
            out[pid] = 0
    return out
