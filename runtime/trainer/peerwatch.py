"""Each rank watches a peer's heartbeat; a silent peer gets the live ranks' stacks dumped, then the group fails.

A rank that stops running (SIGSTOP, a node freezing, a process wedged holding the GIL) hangs every other
rank in the next collective until `transport.collectiveTimeoutSeconds` (10 minutes by default) and then
dies with a timeout that names no one. Here a daemon thread per rank bumps `beat/<rank>` in torchrun's
store (its own connection, so a blocked call on the main thread's never delays it) once a second and
watches rank+1's counter. When it stands still for `transport.peerSilenceSeconds`, the watcher raises the
group's dump flag: every live rank's thread dumps all its threads' stacks into the run volume
(stackdump.py), the watcher that raised it waits a few seconds for them, writes `hang.json` naming the
silent rank as the culprit, logs where the dumps are, and exits the process: torchrun stops the group
and the restart policy (the operator's, or `rlrun local`'s) applies. This is the runtime side of hang
diagnosis, the same in a pod as on one machine: nothing outside the pods needs to reach into them.
A rank that finishes sets `done/<rank>` first, so its silence afterwards is no alarm.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from rlrun import pod_contract
from rlrun.runtime import stackdump

log = logging.getLogger("rlrun.trainer")
BEAT_SECONDS = 1.0
DUMP_WAIT_SECONDS = 5.0
"""How long the reporting rank waits for the live ranks' dumps before it writes the report."""


def termination_message(text: str, path: str = pod_contract.TERMINATION_MESSAGE_PATH) -> bool:
    """In a pod, make `text` the container's termination message (the restart Event's detail) instead of
    the log tail, where torchrun's failure summary would push it out; elsewhere (no such file) nothing."""
    if not os.path.exists(path):
        return False
    try:
        with open(path, "w") as f:
            f.write(text[-4000:])  # the kubelet keeps at most 4096 bytes
    except OSError:
        return False
    return True


class PeerWatch:
    def __init__(self, run_dir: Path, attempt: int, rank: int, world: int, silence_seconds: float) -> None:
        self.run_dir, self.attempt, self.rank, self.world = run_dir, attempt, rank, world
        self.silence_seconds = silence_seconds
        self.peer = (rank + 1) % world
        self.store: dist.Store | None = None
        self._stop = threading.Event()
        self._dumped = False
        self._thread = threading.Thread(target=self._run, name="peer-watch", daemon=True)
        if world < 2:  # nobody to watch
            return
        store = dist.TCPStore(  # torchrun's store, a connection of our own
            os.environ[pod_contract.MASTER_ADDR_ENV], int(os.environ[pod_contract.MASTER_PORT_ENV]), is_master=False,
            timeout=timedelta(seconds=30),
        )  # fmt: skip
        self.store = dist.PrefixStore(f"rlrun/peerwatch/{attempt}/", store)
        self._thread.start()

    def _run(self) -> None:
        assert self.store is not None
        seen, since = -1, time.monotonic()
        while not self._stop.wait(BEAT_SECONDS):
            try:
                self.store.add(f"beat/{self.rank}", 1)
                if self.store.add("dump", 0) and not self._dumped:
                    self._dump("a peer's heartbeat stopped")
                beat = self.store.add(f"beat/{self.peer}", 0)
                if beat != seen or self.store.check([f"done/{self.peer}"]):
                    seen, since = beat, time.monotonic()
                    continue
                if seen > 0 and time.monotonic() - since > self.silence_seconds:
                    self._report(time.monotonic() - since)
            except Exception as exc:  # the store went away: torchrun is tearing the group down
                log.debug("peer watch stopped: %s", exc)
                return

    def _dump(self, why: str) -> None:
        assert self.store is not None
        self._dumped = True
        stackdump.dump_now(why)
        self.store.add("dumped", 1)

    def _report(self, silent_for: float) -> None:
        assert self.store is not None
        first = self.store.add("dump", 1) == 1
        if not self._dumped:
            self._dump(f"rank {self.peer} silent for {silent_for:.0f}s")
        if not first:  # another watcher reports; this rank dumped and goes on until torchrun stops it
            return
        deadline = time.monotonic() + DUMP_WAIT_SECONDS
        while self.store.add("dumped", 0) < self.world - 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        directory = stackdump.dump_dir(self.run_dir, self.attempt)
        names = {
            pid: n
            for pid, n in stackdump.registered(directory).items()
            if n.startswith(stackdump.TRAINER_PREFIX)
        }
        suspect = f"{stackdump.TRAINER_PREFIX}{self.peer}"
        culprit = next((stackdump.label(n, pid) for pid, n in names.items() if n == suspect), suspect)
        why = (
            f"no heartbeat for {silent_for:.1f}s (> transport.peerSilenceSeconds={self.silence_seconds:g}) "
            "and no stack dump: stopped, or wedged holding the GIL"
        )
        diagnosis = stackdump.diagnose(stackdump.read_dumps(directory, names), {culprit: why})
        report = stackdump.write_report(directory, f"rank {self.peer} silent", diagnosis)
        message = (
            f"hang: rank {self.peer} is silent; stack dumps of every live rank in {directory} ({report.name}); "
            f"{diagnosis.summary}; exiting so the group restarts"
        )
        log.critical("%s", message)
        termination_message(message)
        logging.shutdown()
        os._exit(1)

    def close(self) -> None:
        """Finished (or failing) on purpose: peers must not read this rank's silence as a hang."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self.store is not None:
            with contextlib.suppress(Exception):  # the store may already be gone at teardown
                self.store.set(f"done/{self.rank}", "1")
