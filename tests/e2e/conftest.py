import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

HERE = Path(__file__).parent
SHORT_RUN = HERE / "color-codeword-short.yaml"


def _as_in_a_terminal() -> None:
    """SIGINT at its default, as for a command typed in a terminal (Ctrl-C reaches it): a test suite started
    in the background by a non-interactive shell inherits SIGINT ignored, and `rlrun local` rightly keeps an
    inherited ignore, so the Ctrl-C tests would send a SIGINT nobody receives."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def rlrun_local(output_dir: Path, *extra: str, wait: bool = True, timeout: float = 420):
    """`rlrun local` as a real subprocess; `wait=False` returns the Popen so a test can act mid-run."""
    return rlrun_local_file(SHORT_RUN, output_dir, *extra, wait=wait, timeout=timeout)


def rlrun_local_file(
    file: Path,
    output_dir: Path,
    *extra: str,
    wait: bool = True,
    timeout: float = 420,
    env: dict | None = None,
):
    """`rlrun local FILE` as a real subprocess (see `rlrun_local`); `env` adds environment variables."""
    # The console script, not `-m rlrun.cli`: as __main__ the CLI module would be a second copy, not the
    # one the subcommands register with.
    argv = [
        str(Path(sys.executable).with_name("rlrun")),
        "local",
        str(file),
        "--output-dir",
        str(output_dir),
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=_as_in_a_terminal,
    )
    if not wait:
        return proc
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
            proc.communicate(timeout=60)
    return proc.returncode, out


def rlrun_local_watching(
    file: Path, output_dir: Path, watch: Callable[[], None], every: float = 0.05, **kw
) -> tuple[int, str]:
    """`rlrun local FILE` to its end (as `rlrun_local_file`) while `watch()` runs every `every` seconds on a
    thread: what the run prunes or overwrites as it goes (batches, checkpoints, the tree's size) is seen
    there. A watch step racing a deletion (FileNotFoundError) is simply retried at the next tick."""
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            with contextlib.suppress(FileNotFoundError):
                watch()
            time.sleep(every)

    watcher = threading.Thread(target=loop, daemon=True)
    watcher.start()
    try:
        return rlrun_local_file(file, output_dir, **kw)
    finally:
        done.set()
        watcher.join()


def batch_collector(run_dir: Path) -> tuple[Callable[[], None], dict[int, bytes]]:
    """A `watch` that keeps each step's training batch as the trainer read it (the run prunes them after its
    last checkpoint), and the dict it fills: step -> the batch's msgpack bytes."""
    received: dict[int, bytes] = {}

    def collect() -> None:
        for path in (run_dir / "rollouts").glob("step_*/batch.msgpack"):
            step = int(path.parent.name.removeprefix("step_"))
            if step not in received:
                received[step] = path.read_bytes()

    return collect, received


def trained_steps(run_dir: Path) -> int:
    """Steps rank 0 has finished (its metrics lines, written after each step's weights are exported): a
    count that only grows, unlike a weights/step_<n> directory, which retention prunes a few steps later
    (a poller starved for a second or two under load missed it and the run finished uninterrupted)."""
    path = run_dir / "trainer" / "metrics_rank0.jsonl"
    return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.exists() else 0


@pytest.fixture
def no_leftover_processes(tmp_path):
    """Fails the test if a process of this test's run (launcher, roles, torchrun ranks) is still alive.

    Every role gets RLRUN_CONFIG under the run's output dir and the launcher has it on its command line,
    so other people's processes on a shared machine never count.
    """
    yield
    mine = str(tmp_path)
    left = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if mine in cmd or p.environ().get("RLRUN_CONFIG", "").startswith(mine):
                left.append(f"{p.info['pid']}: {cmd[:160]}")
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    assert not left, "processes left behind:\n" + "\n".join(left)
