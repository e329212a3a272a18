"""kwok tier: how a user's environment reaches the env-worker pods, as the API server stores them.

`envWorkers.image` replaces the runtime image on the env-worker pods only; `envWorkers.packages` reaches
the env-workers' runtime config (the ConfigMap), and the index credentials come from the named Secret as
env vars on the env-worker container alone (no other role, and never in the ConfigMap). What the
env-worker does with them (install into a venv on the volume, run in it) is tests/unit/envs/test_packages.py
and tests/e2e/test_byo_environment.py.
"""

import json

import pytest
from operator_harness import create_run, get, pods, run_doc, running_operator

from rlrun import pod_contract

pytestmark = pytest.mark.cluster

IMAGE = "registry.example/team/word-echo-env:1.0"  # FROM the runtime image, plus the package
PACKAGES = {
    "requirements": ["word-echo==0.1.0"],
    "indexUrl": "https://pkgs.example/simple",
    "wheelsDir": "/data/wheels",
    "credentialsSecret": "pkg-index",
}


def test_env_worker_image_packages_and_index_credentials_reach_the_pods(crd, namespace, wait_for):
    kube = crd
    doc = run_doc()
    doc["spec"]["envWorkers"].update(image=IMAGE, packages=PACKAGES)
    doc["spec"]["envWorkers"]["environment"] = {"id": "word-echo"}
    with running_operator(kube, namespace):
        create_run(kube, namespace, doc)
        worker = wait_for(lambda: (pods(kube, namespace, "env-workers") or [None])[0], 60, "env-worker pod")
        [main] = worker["spec"]["containers"]
        assert main["image"] == IMAGE
        env = {e["name"]: e for e in main["env"]}
        for name, key in ((pod_contract.PACKAGE_INDEX_USERNAME_ENV, "username"),
                          (pod_contract.PACKAGE_INDEX_PASSWORD_ENV, "password")):  # fmt: skip
            assert env[name]["valueFrom"] == {"secretKeyRef": {"name": "pkg-index", "key": key}}
        for component in ("inference", "orchestrator", "trainer"):
            other = wait_for(
                lambda c=component: (pods(kube, namespace, c) or [None])[0], 60, f"{component} pod"
            )
            assert all(c["image"] != IMAGE for c in other["spec"]["containers"])
            assert not any(
                e["name"].startswith("RLRUN_PACKAGE_INDEX")
                for c in other["spec"]["containers"]
                for e in c["env"]
            )
        config = json.loads(get(kube, namespace, "configmap", "demo-config")["data"][pod_contract.CONFIG_KEY])
        assert config["envWorkers"]["packages"] == {
            **{k: v for k, v in PACKAGES.items() if k != "credentialsSecret"},
            "installTimeoutSeconds": 1800.0,  # the default bound of the install
        }
        assert config["envWorkers"]["environment"]["id"] == "word-echo"
