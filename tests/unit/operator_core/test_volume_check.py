"""A run volume the pods' uid cannot write: the role stops at once with a precise reason, and the operator
fails the run with it (reason VolumeNotWritable) without spending a restart; any other failed pod's exit
reason and last log lines reach the restart Event.

The role side runs the real orchestrator entry point in a forked child that dropped to uid/gid 1000 (what
the pods run as) against a root-owned 0755 directory, as a hostPath or an NFS export owned by root is.
The operator side feeds what that role printed to plan() as the kubelet reports it: the container's
termination message (FallbackToLogsOnError: its last log lines).
"""

import os
import sys
import tempfile
from pathlib import Path

from operator_builders import body, find, observed, pod, rendered
from test_reconcile import run_pass

from rlrun.operator.observe import observe
from rlrun.operator.restarts import GroupState
from rlrun.operator.status import RunStatus
from rlrun.runtime.orchestrator.main import main as orchestrator_main


def _run_as_uid_1000(asset_root: Path) -> tuple[int, str]:
    """Exit code and stderr of `rlrun-orchestrator` run as uid/gid 1000 with RLRUN_ASSET_ROOT=asset_root."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 70
        try:
            sys.stderr = open(write, "w")  # noqa: SIM115 (the child exits with os._exit)
            os.setgroups([])
            os.setgid(1000)
            os.setuid(1000)
            os.environ.update({"RLRUN_ASSET_ROOT": str(asset_root), "RUN_ID": "vol"})
            os.environ.pop("RLRUN_CONFIG", None)
            orchestrator_main([])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        stderr = pipe.read()
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status), stderr


def test_role_stops_with_the_reason_and_the_operator_fails_the_run_without_a_restart():
    volume = Path(tempfile.mkdtemp(prefix="rlrun-volume-", dir="/tmp"))
    try:
        volume.chmod(0o755)  # root-owned, world-readable, not writable by 1000: a typical hostPath / NFS root
        code, stderr = _run_as_uid_1000(volume)
    finally:
        volume.rmdir()
    assert code == 78, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"VolumeNotWritable: the run directory {volume}/run_vol is not writable by uid 1000"
    )
    assert f"{volume} is owned by 0:0 with mode 0755" in line and "fsGroup" in line

    data = body()
    objs = observed(rendered(data)(0))
    orch = find(objs, "Job", "orchestrator")
    failed = pod(orch, "color-codeword-orchestrator-x", "Failed")
    terminated = {"exitCode": code, "reason": "Error", "message": stderr}
    failed["status"]["containerStatuses"] = [{"name": "orchestrator", "state": {"terminated": terminated}}]
    p = run_pass(data, observe(objs, [failed]), RunStatus(observed_generation=1, phase="Pending"))
    assert (p.status.phase, p.status.reason) == ("Failed", "VolumeNotWritable")
    assert p.status.orchestrator.restarts == 0 and p.status.trainer.restarts == 0
    assert "is not writable by uid 1000" in p.status.message
    assert [e.reason for e in p.events if e.type == "Warning"] == ["VolumeNotWritable"]


def test_a_failed_pods_exit_reason_and_last_log_lines_reach_the_restart_event():
    data = body()
    objs = observed(rendered(data)(0))
    trainer = find(objs, "Job", "trainer")
    failed = pod(trainer, "color-codeword-trainer-0-x", "Failed")
    terminated = {"exitCode": 137, "reason": "OOMKilled", "message": "step 3 loss 0.1\nallocating 9 GiB"}
    failed["status"]["containerStatuses"] = [{"name": "trainer", "state": {"terminated": terminated}}]
    stored = RunStatus(observed_generation=1, phase="Running", trainer=GroupState())
    p = run_pass(data, observe(objs, [failed]), stored)
    [event] = [e for e in p.events if e.reason == "TrainerRestart"]
    assert "trainer: exit 137 (OOMKilled): step 3 loss 0.1\nallocating 9 GiB" in event.message
    assert p.status.trainer.restarts == 1
