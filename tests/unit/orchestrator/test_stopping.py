"""A SIGTERM that reaches the orchestrator while a step is being committed (its batch written, the rest of
its record not yet) stops it only after the commit, so its saved position never lags what the trainer may
have trained; outside a commit it cancels at once. Real SIGTERMs to a real process running the
orchestrator's own `until_sigterm`."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from rlrun.runtime.orchestrator.main import until_sigterm
    from rlrun.runtime.orchestrator.stopping import COMMIT

    async def work(in_commit):
        if in_commit:
            with COMMIT.committing():
                os.kill(os.getpid(), signal.SIGTERM)
                await asyncio.sleep(0.5)  # the sample log's await: the stop must not land here
                print("committed", flush=True)
            print("after the commit", flush=True)  # never reached: the deferred stop cancels first
        else:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(5)
            print("not cancelled", flush=True)

    print("stopped" if asyncio.run(until_sigterm(work(sys.argv[1] == "commit"))) else "finished", flush=True)
    """
)


def _run(mode: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split("\n")[:-1]


def test_a_sigterm_during_a_commit_stops_right_after_it():
    assert _run("commit") == ["committed", "stopped"]


def test_a_sigterm_outside_a_commit_cancels_at_once():
    assert _run("generate") == ["stopped"]
