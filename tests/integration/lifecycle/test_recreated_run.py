"""A run deleted and created again under the same name: its progress pushes are accepted.

The operator cached each run's progress token by Secret name forever; the new run's orchestrator pushes
with its new Secret's token and got HTTP 401 for the whole run (empty Step/Reward, no stall detection).
"""

import base64

import httpx
import pytest
from operator_harness import create_run, get, run_doc, run_status, running_operator

from rlrun.runtime.config import Progress

pytestmark = pytest.mark.cluster


def test_a_recreated_run_with_the_same_name_gets_its_progress_accepted(crd, namespace, wait_for):
    kube = crd
    with running_operator(kube, namespace) as op:
        url = f"http://127.0.0.1:{op.progress_port}/v1/namespaces/{namespace}/rlruns/demo/progress"

        def token() -> str:
            return base64.b64decode(get(kube, namespace, "secret", "demo-progress")["data"]["token"]).decode()

        def push(token: str, step: int) -> int:
            body = Progress(run_id="demo", step=step, max_steps=60).model_dump_json(by_alias=True)
            headers = {"Authorization": f"Bearer {token}"}
            return httpx.post(url, content=body, headers=headers, timeout=5).status_code

        create_run(kube, namespace, run_doc())
        wait_for(lambda: get(kube, namespace, "secret", "demo-progress") is not None, 60, "first Secret")
        first = token()
        assert push(first, 1) == 202
        kube.kubectl("delete", "rlrun", "demo", "-n", namespace, "--wait=true")
        wait_for(lambda: get(kube, namespace, "secret", "demo-progress") is None, 60, "Secret collected")
        create_run(kube, namespace, run_doc())
        wait_for(lambda: get(kube, namespace, "secret", "demo-progress") is not None, 60, "second Secret")
        second = token()
        assert second != first
        assert push(first, 2) == 401, "the deleted run's token must no longer be accepted"
        assert push(second, 1) == 202
        wait_for(lambda: (run_status(kube, namespace).get("progress") or {}).get("step") == 1, 20, "status")
