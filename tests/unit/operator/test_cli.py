"""`rlrun render` prints the children as a YAML stream; `rlrun crd` prints / writes the generated CRD."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from rlrun.cli import main
from rlrun.operator.api import RLRun
from rlrun.operator.crd import crd_yaml
from rlrun.operator.render import render_children

REPO = Path(__file__).resolve().parents[3]


def test_render_prints_every_child_of_an_example(capsys):
    path = REPO / "examples" / "multi-node.yaml"
    assert main(["render", str(path), "-n", "team"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    token = secret["stringData"]["token"]
    assert len(token) >= 32  # a fresh random token, as the operator draws for a new run
    expected = render_children(RLRun.model_validate({**yaml.safe_load(path.read_text())} | {
        "metadata": {"name": "qwen2-vl-7b-multinode", "namespace": "team"}}), progress_token=token)  # fmt: skip
    assert docs == expected
    assert {d["kind"] for d in docs} >= {"PersistentVolumeClaim", "Job", "Deployment", "NetworkPolicy"}


def test_render_reports_an_invalid_spec_by_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: rlrun.dev/v1alpha1\nkind: RLRun\nmetadata: {name: bad}\n"
                   "spec: {orchestrator: {batchSize: 30, groupSize: 8}}\n")  # fmt: skip
    assert main(["render", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "spec.orchestrator" in err and "must be a multiple of orchestrator.groupSize" in err


def test_crd_prints_the_generated_crd(capsys):
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == crd_yaml()


def test_crd_write_creates_and_then_keeps_files(tmp_path, capsys):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    assert main(["crd", "--write", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "helm/rlrun/crds/rlrun.dev_rlruns.yaml").read_text() == crd_yaml()
    assert (tmp_path / "manifests/examples/color-codeword.yaml").is_file()
    capsys.readouterr()
    assert main(["crd", "--write", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""  # nothing changed, nothing rewritten
