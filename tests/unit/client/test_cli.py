"""The run commands' exit codes and messages, without a cluster (local backend, an unreachable server)."""

import socket
import subprocess
import sys
import tomllib
from pathlib import Path

from rlrun.cli import main
from rlrun.client.errors import EXIT_CODE_MEANINGS, ExitCode


def test_help_lists_every_exit_code(capsys):
    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    for code, meaning in EXIT_CODE_MEANINGS.items():
        assert f"  {int(code)}  {code.name.lower()}" in out and meaning in out


def test_invalid_spec_is_a_usage_error_naming_the_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: rlrun.dev/v1alpha1\nkind: RLRun\nmetadata: {name: bad}\n"
                   "spec: {orchestrator: {batchSize: 30, groupSize: 8}}\n")  # fmt: skip
    assert main(["submit", str(bad), "--local", str(tmp_path)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "spec.orchestrator: orchestrator.batchSize (30) must be a multiple" in err
    assert not (tmp_path / ".rlrun-client").exists(), "nothing is started for a rejected spec"


def test_missing_run_and_unknown_component(tmp_path, capsys):
    assert main(["get", "nope", "--local", str(tmp_path)]) == ExitCode.NOT_FOUND
    assert "rlrun 'nope' not found" in capsys.readouterr().err
    assert main(["wait", "nope", "--local", str(tmp_path), "--timeout", "1"]) == ExitCode.NOT_FOUND
    assert main(["list", "--local", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == ["NAME", "PHASE", "STEP", "REWARD", "RESTARTS", "REASON"]
    assert main(["logs", "nope", "-c", "vllm", "--local", str(tmp_path)]) == ExitCode.USAGE
    assert "unknown component 'vllm'" in capsys.readouterr().err


def test_unreachable_api_server_is_unavailable(tmp_path: Path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u, namespace: team}}}}]
current-context: c
""")
    assert main(["get", "demo", "--kubeconfig", str(kubeconfig)]) == ExitCode.UNAVAILABLE
    assert f"cannot reach the Kubernetes API server at http://127.0.0.1:{port}" in capsys.readouterr().err


def test_the_client_loads_without_torch():
    """A platform's process imports rlrun.client (both backends) and never torch."""
    code = (
        "import sys, rlrun.client as c; c.Client; c.LocalClient; c.RunEvent; sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_client_extra_pins_what_the_operator_pins():
    """`pip install 'rlrun[client]'` gets the kubernetes client the operator image is tested with."""
    extras = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())
    extras = extras["project"]["optional-dependencies"]
    assert extras["client"] and set(extras["client"]) <= set(extras["operator"])


def test_no_credentials_say_where_to_put_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["list"]) == ExitCode.UNAVAILABLE
    assert "no Kubernetes credentials" in capsys.readouterr().err
