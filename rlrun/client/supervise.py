"""`python -m rlrun.client.supervise RECORD_DIR -- COMMAND...`: the local backend's launcher keeper.

It runs COMMAND (`rlrun local ...`) and, when it ends, writes `RECORD_DIR/exit.json` (atomically) with its
exit code: that file is how any later `LocalClient`, in any process, learns the run's terminal phase.
SIGTERM/SIGINT are passed on as SIGINT, the signal on which `rlrun local` stops every role it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

EXIT_FILE = "exit.json"
CANCELLED_FILE = "cancelled"


def write_exit(record_dir: Path, returncode: int) -> None:
    tmp = record_dir / f".{EXIT_FILE}.tmp"
    tmp.write_text(json.dumps({"returncode": returncode, "finishedAt": datetime.now(UTC).isoformat()}))
    os.replace(tmp, record_dir / EXIT_FILE)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m rlrun.client.supervise RECORD_DIR -- COMMAND...", file=sys.stderr)
        return 2
    record_dir, command = Path(args[0]), args[2:]
    child = subprocess.Popen(command)

    def forward(signum: int, _frame: object) -> None:
        (record_dir / CANCELLED_FILE).touch()
        child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    returncode = child.wait()
    write_exit(record_dir, returncode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
