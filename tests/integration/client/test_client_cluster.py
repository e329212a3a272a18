"""rlrun.client against a real kube-apiserver with the real operator (kwok tier): the test plays the runtime
(pushes progress, ends the orchestrator pod) and drives faults for real (dropped connections, lost answers,
an expired resourceVersion, missing RBAC, a cluster admission policy)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from controlplane import ControlPlane
from faulty_proxy import FaultyProxy
from operator_harness import bind_volume, get, install_crd, pods, run_doc, running_operator
from runtime_player import MAX_STEPS, kubeconfig_for, push_progress, running_orchestrator, status

from rlrun.cli import main
from rlrun.client import (
    Client,
    CRDNotInstalled,
    ExitCode,
    Forbidden,
    RequestConflict,
    RunDeleted,
    RunNotFound,
    SpecRejected,
    Unavailable,
)
from rlrun.client.request import LABEL_REQUEST, request_digest

pytestmark = pytest.mark.cluster


def readers(kube, namespace, run):
    return get(kube, namespace, "pods", "-l", f"rlrun.dev/log-reader-of={run}")["items"]


def admin(kube, namespace, **kw) -> Client:
    return Client(namespace, kubeconfig=str(kube.kubeconfig), **kw)


def finish(kube, namespace, name, op, set_pod_phase, wait_for, reward=0.9):
    """Play a successful end of the run: the last progress report, then the orchestrator pod succeeds."""
    push_progress(kube, namespace, name, op.progress_port, MAX_STEPS, reward, state="succeeded")
    wait_for(
        lambda: (status(kube, namespace, name).get("progress") or {}).get("step") == MAX_STEPS,
        30,
        "final step",
    )
    set_pod_phase(namespace, running_orchestrator(kube, namespace, name), "Succeeded")


def test_submit_watch_wait_reach_succeeded_with_the_reported_progress(
    crd, namespace, wait_for, set_pod_phase
):
    kube = crd
    with running_operator(kube, namespace) as op, admin(kube, namespace) as client:
        bind_volume(kube, namespace, "demo")
        run = client.submit(run_doc(), "demo", request_id="pipeline-1")
        assert run.metadata.uid and client.get("demo").metadata.uid == run.metadata.uid
        events = []
        # the API server ends this watcher's stream every second: it must re-watch without losing a change
        rewatching = admin(kube, namespace, watch_timeout=1)
        watcher = threading.Thread(target=lambda: events.extend(rewatching.watch("demo", timeout=120)))
        watcher.start()
        wait_for(lambda: running_orchestrator(kube, namespace, "demo"), 60, "orchestrator pod Running")
        wait_for(lambda: client.get("demo").status.phase == "Running", 60, "Running")
        push_progress(kube, namespace, "demo", op.progress_port, 3, 0.25)
        wait_for(lambda: any(e.progress and e.progress.step == 3 for e in events), 30, "step 3 watched")
        seen = []
        finisher = threading.Thread(
            target=finish, args=(kube, namespace, "demo", op, set_pod_phase, wait_for)
        )
        finisher.start()
        outcome = client.wait("demo", timeout=120, on_event=seen.append)
        finisher.join()
        watcher.join(30)
    assert outcome.phase == "Succeeded" and outcome.succeeded
    assert (outcome.progress.step, outcome.progress.max_steps, outcome.progress.reward_mean) == (
        MAX_STEPS,
        MAX_STEPS,
        0.9,
    )
    phases = [e.phase for e in events if "phase" in e.changed]
    assert phases[0] in (None, "Pending", "Running") and "Running" in phases and phases[-1] == "Succeeded", (
        phases
    )
    assert events[-1].terminal and events[-1].progress.step == MAX_STEPS
    assert [e.progress.step for e in events if "progress" in e.changed] == [3, MAX_STEPS]
    assert seen[-1].phase == "Succeeded"
    result = admin(kube, namespace).result("demo")
    assert result.volume_claim == "demo-assets" and result.progress.step == MAX_STEPS
    assert result.final_weights == f"/data/outputs/run_demo/weights/step_{MAX_STEPS}"


def test_one_request_id_makes_one_run_under_concurrency_retries_and_lost_answers(crd, namespace, tmp_path):
    kube = crd
    doc = run_doc()
    # ten platform workers submit the same request at once, each with its own connection
    clients = [admin(kube, namespace) for _ in range(10)]
    barrier = threading.Barrier(10)

    def submit(client):
        barrier.wait()
        return client.submit(doc, request_id="train-42")

    with ThreadPoolExecutor(10) as pool:
        runs = list(pool.map(submit, clients))
    assert len({(r.metadata.name, r.metadata.uid) for r in runs}) == 1
    name = runs[0].metadata.name
    assert name == f"demo-{request_digest('train-42')[:8]}"
    assert [r.metadata.name for r in clients[0].list({LABEL_REQUEST: request_digest("train-42")})] == [name]
    assert len(get(kube, namespace, "rlruns")["items"]) == 1
    # a later retry returns the same run; the same id with another spec is a conflict
    assert clients[0].submit(doc, request_id="train-42").metadata.uid == runs[0].metadata.uid
    changed = run_doc(orchestrator={**doc["spec"]["orchestrator"], "maxSteps": 7})
    with pytest.raises(RequestConflict, match=r"already created rlrun .* with a different spec"):
        clients[0].submit(changed, request_id="train-42")
    with pytest.raises(RequestConflict, match="created by request id 'train-42'"):
        clients[0].submit(doc, name, request_id="train-43")
    # the create reaches the server but its answer is lost: the client's retry finds the run it made
    proxy = FaultyProxy(kube.server)
    try:
        proxy.lose_responses = 1
        lossy = Client(namespace, kubeconfig=str(kubeconfig_for(kube, tmp_path / "kc", namespace, proxy.url)))
        run = lossy.submit(doc, request_id="lost-answer")
        assert proxy.connections >= 2, "the first answer was really lost"
    finally:
        proxy.close()
    assert [r.metadata.uid for r in clients[0].list({LABEL_REQUEST: request_digest("lost-answer")})] == [
        run.metadata.uid
    ]
    for c in clients:
        c.close()


def test_a_dropped_watch_resumes_without_missing_the_terminal_event(
    crd, namespace, wait_for, set_pod_phase, tmp_path
):
    kube = crd
    proxy = FaultyProxy(kube.server)
    kubeconfig = kubeconfig_for(kube, tmp_path / "kc", namespace, proxy.url)
    with running_operator(kube, namespace) as op, admin(kube, namespace) as client:
        bind_volume(kube, namespace, "demo")
        client.submit(run_doc(), "demo")
        watcher = Client(namespace, kubeconfig=str(kubeconfig), reconnect_timeout=60)
        events = []
        thread = threading.Thread(target=lambda: events.extend(watcher.watch("demo", timeout=120)))
        thread.start()
        wait_for(lambda: any(e.phase == "Running" for e in events), 60, "Running watched")
        proxy.pause()  # the watch connection is cut and reconnecting is refused...
        finish(kube, namespace, "demo", op, set_pod_phase, wait_for, reward=0.75)
        wait_for(lambda: status(kube, namespace, "demo").get("phase") == "Succeeded", 30, "Succeeded")
        assert thread.is_alive() and events[-1].phase == "Running", "the watcher saw nothing while cut off"
        proxy.resume()  # ...until the network is back: the watch resumes from its resourceVersion
        thread.join(60)
        # a watcher whose stored resourceVersion the server no longer keeps (410 Gone) lists again
        replay = list(client.watch("demo", resource_version="1", timeout=30))
    proxy.close()
    assert not thread.is_alive() and proxy.connections >= 2
    assert events[-1].phase == "Succeeded" and events[-1].progress.step == MAX_STEPS
    assert events[-1].progress.reward_mean == 0.75
    assert len(replay) == 1 and replay[0].phase == "Succeeded" and replay[0].progress.step == MAX_STEPS


def test_cancel_deletes_the_run_and_its_children_but_not_an_existing_claim(crd, namespace, wait_for):
    kube = crd
    shared = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "shared"},
              "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "",
                       "resources": {"requests": {"storage": "1Gi"}}}}  # fmt: skip
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(shared))
    with running_operator(kube, namespace), admin(kube, namespace) as client:
        bind_volume(kube, namespace, "demo")
        client.submit(run_doc(), "demo")
        client.submit(run_doc("keep", storage={"existingClaim": "shared"}), "keep")
        wait_for(lambda: client.get("demo").status.phase == "Running", 60, "Running")
        wait_for(lambda: get(kube, namespace, "job", "keep-trainer"), 60, "keep's children")
        watching = threading.Event()
        waiting = ThreadPoolExecutor(1).submit(client.wait, "demo", 60, lambda _: watching.set())
        assert watching.wait(30), "wait() is watching"
        client.cancel("demo")
        client.cancel("keep")
        with pytest.raises(RunDeleted, match="was deleted before it reached a terminal phase"):
            waiting.result(30)
        with pytest.raises(RunNotFound):
            client.get("demo")
        with pytest.raises(RunNotFound):
            client.cancel("demo")
        for kind, name in (
            ("job", "demo-trainer"),
            ("statefulset", "demo-inference"),
            ("configmap", "demo-config"),
        ):
            wait_for(
                lambda k=kind, n=name: get(kube, namespace, k, n) is None, 60, f"{kind} {name} collected"
            )
        wait_for(lambda: not pods(kube, namespace, "trainer"), 60, "trainer pods gone")

        def claim_going():
            pvc = get(kube, namespace, "pvc", "demo-assets")
            return pvc is None or pvc["metadata"].get("deletionTimestamp")

        wait_for(claim_going, 60, "the run's own claim is deleted with it")
        wait_for(lambda: get(kube, namespace, "job", "keep-trainer") is None, 60, "keep's children collected")
        kept = get(kube, namespace, "pvc", "shared")
        assert kept is not None and not kept["metadata"].get("deletionTimestamp"), "an existingClaim stays"


def test_cli_exit_codes_for_failed_timed_out_and_rejected_runs(crd, namespace, tmp_path, capsys, wait_for):
    kube = crd
    kc = str(kubeconfig_for(kube, tmp_path / "kc", namespace))
    doomed = tmp_path / "doomed.yaml"
    doomed.write_text(yaml.safe_dump(run_doc("doomed", activeDeadlineSeconds=3)))
    slow = tmp_path / "slow.yaml"
    slow.write_text(yaml.safe_dump(run_doc("slow")))
    with running_operator(kube, namespace):
        assert (
            main(["submit", str(doomed), "--wait", "--timeout", "60", "--kubeconfig", kc]) == ExitCode.FAILED
        )
        assert "DeadlineExceeded" in capsys.readouterr().out
        assert main(["submit", str(slow), "--kubeconfig", kc, "-o", "json"]) == 0
        assert main(["wait", "slow", "--timeout", "2", "--kubeconfig", kc]) == ExitCode.TIMED_OUT
        assert "did not finish within 2s" in capsys.readouterr().err
        assert main(["get", "nothing", "--kubeconfig", kc]) == ExitCode.NOT_FOUND
        # (no log is read from a kwok pod: the API server would dial the fake node's address)
        queued = tmp_path / "queued.yaml"
        queued.write_text(yaml.safe_dump(run_doc("queued", queueName="gpu-queue")))
        assert main(["submit", str(queued), "--kubeconfig", kc]) == 0
        assert main(["logs", "queued", "-c", "trainer", "--kubeconfig", kc]) == ExitCode.NOT_FOUND
        assert "has no trainer pod now" in capsys.readouterr().err
        attempt = ["--attempt", "3", "--kubeconfig", kc]
        # an attempt without pods: its logs are on the volume, read by a log-reader pod, which kwok never
        # runs to its end: the reader's deadline bounds the wait, and the pod is deleted after it
        assert main(["logs", "queued", "-c", "trainer", *attempt, "--reader-timeout", "2"]) == (
            ExitCode.UNAVAILABLE
        )
        assert "did not finish within 2s" in capsys.readouterr().err
        wait_for(lambda: not readers(kube, namespace, "queued"), 30, "the log-reader pod deleted")
        assert main(["logs", "queued", "-c", "inference", *attempt]) == ExitCode.USAGE
        assert "--attempt applies to trainer and orchestrator, not inference" in capsys.readouterr().err
        assert main(["list", "--kubeconfig", kc, "-o", "yaml"]) == 0
        assert {r["metadata"]["name"] for r in yaml.safe_load(capsys.readouterr().out)} == {
            "doomed",
            "slow",
            "queued",
        }


def test_an_ended_attempts_logs_are_read_from_the_volume_by_an_owned_read_only_reader_pod(
    crd, namespace, wait_for, set_pod_phase
):
    """Once an attempt's pods are gone, `logs --attempt` reads the attempt's files from the run volume
    through a log-reader pod the real API server admits: the run's claim read-only, the runtime image's
    `rlrun-podlog read`, owned by the run. kwok runs no container, so the test ends the pod as a failed
    kubelet would, and the client reports it (the real-node tier reads real files through it)."""
    kube = crd
    with running_operator(kube, namespace):
        client = admin(kube, namespace, log_reader_timeout=60)
        bind_volume(kube, namespace, "gone")
        run = client.submit(run_doc("gone"))
        wait_for(lambda: pods(kube, namespace, "trainer", run="gone"), 60, "trainer pod")
        result: list[BaseException] = []

        def read() -> None:
            try:
                list(client.logs("gone", "trainer", attempt=7))
            except BaseException as e:
                result.append(e)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            (pod,) = wait_for(lambda: readers(kube, namespace, "gone"), 30, "a log-reader pod")
            (c,) = pod["spec"]["containers"]
            run_dir = "/data/outputs/run_gone"
            assert c["command"] == ["rlrun-podlog", "read", "--run-dir", run_dir, "--component", "trainer",
                                    "--attempt", "7"]  # fmt: skip
            assert c["image"] == run.spec.images.runtime and c["volumeMounts"][0]["readOnly"] is True
            (volume,) = pod["spec"]["volumes"]
            assert volume["persistentVolumeClaim"] == {"claimName": "gone-assets", "readOnly": True}
            (owner,) = pod["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["uid"]) == ("RLRun", run.metadata.uid)
            assert "app.kubernetes.io/instance" not in pod["metadata"]["labels"]  # not one of the children
            set_pod_phase(namespace, pod["metadata"]["name"], "Failed")
            reader.join(60)
        finally:
            reader.join(60)
        (error,) = result
        # no pods/log from a kwok node: the client says which pod it could not read and why
        assert isinstance(error, Unavailable) and "the log-reader pod gone-logs-" in str(error), error
        wait_for(lambda: not readers(kube, namespace, "gone"), 30, "the log-reader pod deleted")


def test_a_user_without_create_permission_gets_the_rbac_error(crd, namespace, tmp_path, capsys):
    kube = crd
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "rlrun-viewer"},
            "rules": [{"apiGroups": ["rlrun.dev"], "resources": ["rlruns"], "verbs": ["get", "list", "watch"]}]}  # fmt: skip
    kube.kubectl("create", "serviceaccount", "viewer", "-n", namespace)
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(role))
    kube.kubectl("create", "rolebinding", "viewer", "-n", namespace, "--role=rlrun-viewer",
                 f"--serviceaccount={namespace}:viewer")  # fmt: skip
    token = kube.kubectl("create", "token", "viewer", "-n", namespace).stdout.strip()
    kc = kubeconfig_for(kube, tmp_path / "viewer.kc", namespace, token=token, user="viewer")
    viewer = Client(kubeconfig=str(kc))
    assert viewer.namespace == namespace and viewer.list() == []
    with pytest.raises(Forbidden) as err:
        viewer.submit(run_doc(), "demo", request_id="r1")
    message = str(err.value)
    assert f'"system:serviceaccount:{namespace}:viewer" cannot create resource "rlruns"' in message
    assert "ask a cluster admin for a Role granting verb 'create' on resource 'rlruns'" in message
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump(run_doc()))
    assert main(["submit", str(file), "--kubeconfig", str(kc)]) == ExitCode.FORBIDDEN
    assert "cannot create resource" in capsys.readouterr().err


def test_admission_rejection_carries_the_servers_message(crd, namespace, wait_for, tmp_path, capsys):
    """A cluster policy the client cannot know (a ValidatingAdmissionPolicy, bound to this namespace only)."""
    kube = crd
    kube.kubectl("label", "namespace", namespace, f"rlrun-test-policy={namespace}")
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": f"max-nodes-{namespace}"},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": ["rlrun.dev"], "apiVersions": ["*"],
                                                         "operations": ["CREATE"], "resources": ["rlruns"]}]},
                 "validations": [{"expression": "object.spec.trainer.nodes <= 2",
                                  "message": "team quota: at most 2 trainer nodes per run"}]},
    }  # fmt: skip
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": f"max-nodes-{namespace}"},
        "spec": {"policyName": f"max-nodes-{namespace}", "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"rlrun-test-policy": namespace}}}},
    }  # fmt: skip
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([policy, binding]))
    big = run_doc("big", trainer={"nodes": 4})
    try:
        probe = kube.kubectl
        wait_for(lambda: probe("create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(big),
                               check=False).returncode != 0, 30, "policy in force")  # fmt: skip
        with pytest.raises(SpecRejected) as err, admin(kube, namespace) as client:
            client.submit(big, request_id="big-1")
        assert "team quota: at most 2 trainer nodes per run" in str(err.value)
        file = tmp_path / "big.yaml"
        file.write_text(yaml.safe_dump(big))
        kc = str(kubeconfig_for(kube, tmp_path / "kc", namespace))
        assert main(["submit", str(file), "--kubeconfig", kc]) == ExitCode.USAGE
        assert "team quota" in capsys.readouterr().err
        assert get(kube, namespace, "rlruns")["items"] == []
    finally:
        kube.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy",
                     f"max-nodes-{namespace}", check=False)  # fmt: skip


def test_without_the_crd_the_error_says_to_install_it(tmp_path_factory):
    """A control plane of its own: the shared ones have the CRD installed by other tests."""
    plane = ControlPlane(tmp_path_factory.mktemp("nocrd")).start()
    try:
        client = Client("default", kubeconfig=str(plane.kubeconfig))
        for call in (lambda: client.submit(run_doc(), "demo"), lambda: client.get("demo"), client.list):
            with pytest.raises(CRDNotInstalled, match="install the operator first"):
                call()
        install_crd(plane)
        with pytest.raises(RunNotFound, match="rlrun 'demo' not found in namespace 'default'"):
            client.get("demo")
    finally:
        plane.stop()
