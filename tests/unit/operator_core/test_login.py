"""kopf logs in with the identity of the operator's kubeconfig: token users included (every in-cluster pod,
every ServiceAccount kubeconfig). A lost token means kopf runs as system:anonymous and gets Forbidden."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from rlrun.operator.kube import bearer_token, connection_info


def _kubeconfig(path: Path, user: dict[str, str]) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def _loaded(path: Path) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=cfg)
    return client.ApiClient(cfg)


def test_token_kubeconfig_logs_kopf_in_with_that_token(tmp_path):
    api = _loaded(_kubeconfig(tmp_path / "kc", {"token": "sa-token.abc"}))
    info = connection_info(api)
    assert (info.token, info.scheme, info.server) == ("sa-token.abc", "Bearer", "https://127.0.0.1:6443")


def test_in_cluster_refreshed_token_is_read_through_the_refresh_hook(tmp_path):
    """The in-cluster loader stores "bearer <tok>" and re-reads the rotated token file in a hook."""
    token_file = tmp_path / "token"
    token_file.write_text("first")
    cfg = client.Configuration()

    def refresh(c: client.Configuration) -> None:
        c.api_key["BearerToken"] = "bearer " + token_file.read_text()

    cfg.refresh_api_key_hook = refresh
    assert bearer_token(cfg) == "first"
    token_file.write_text("rotated")
    assert bearer_token(cfg) == "rotated"


@pytest.mark.parametrize(
    ("api_key", "expected"),
    [({"authorization": "Bearer legacy"}, "legacy"), ({"BearerToken": "bare"}, "bare"), ({}, None)],
)
def test_legacy_and_bare_forms(api_key, expected):
    cfg = client.Configuration()
    cfg.api_key = api_key
    assert bearer_token(cfg) == expected


def test_certificate_user_gets_no_token(tmp_path):
    cert, key = tmp_path / "c.crt", tmp_path / "c.key"
    cert.write_text("x")
    key.write_text("y")
    api = _loaded(_kubeconfig(tmp_path / "kc", {"client-certificate": str(cert), "client-key": str(key)}))
    info = connection_info(api)
    assert info.token is None and info.scheme is None and info.certificate_path and info.private_key_path
