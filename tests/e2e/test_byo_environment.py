"""README "Write your own environment", as written: its package (pyproject with an entry point, the
environment, a JSONL dataset) is built into a wheel, installed outside rlrun's virtualenv, and `rlrun local`
trains on it by name.

The README's commands run with what this machine needs: `uv build --offline --no-build-isolation` (the
setuptools of this virtualenv, no index), and `uv pip install --target` into the test's own directory put on
PYTHONPATH of `rlrun local` and so of every role it starts, so the shared .venv never sees the package.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest
import yaml
from readme_env import build_wheel, readme_files, write_tree

from rlrun.runtime.transport.handoff import batch_path
from rlrun.runtime.wire import TrainingBatch

from .conftest import rlrun_local_file

pytestmark = pytest.mark.e2e
PYTHON = Path(sys.executable)


def install_wheel(project: Path, work: Path) -> Path:
    """Build `project` into a wheel and install it into `work/site` (a --target dir); returns the site dir."""
    wheel = build_wheel(project, work / "dist")
    install = ["uv", "--offline", "--no-config", "pip", "install", "--no-deps", "--python", str(PYTHON),
               "--target", str(work / "site")]  # fmt: skip
    subprocess.run([*install, str(wheel)], check=True, capture_output=True, timeout=300)
    return work / "site"


def test_readme_environment_is_built_installed_and_trained_by_name(tmp_path, no_leftover_processes):
    files = readme_files()
    assert set(files) == {
        "word-echo/pyproject.toml",
        "word-echo/word_echo/__init__.py",
        "word-echo/word_echo/words.jsonl",
        "word-echo.yaml",
    }
    write_tree(tmp_path / "src", files)
    site = install_wheel(tmp_path / "src" / "word-echo", tmp_path)
    assert (site / "word_echo" / "words.jsonl").is_file()  # the dataset travelled in the wheel
    assert importlib.util.find_spec("word_echo") is None  # not in rlrun's virtualenv

    spec = yaml.safe_load(files["word-echo.yaml"])["spec"]
    out = tmp_path / "out"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    code, log = rlrun_local_file(tmp_path / "src" / "word-echo.yaml", out, env=env, timeout=600)
    assert code == 0, log[-4000:]
    run_dir = out / "run_word-echo"
    steps = spec["orchestrator"]["maxSteps"]
    assert f"done: {steps} steps" in log
    metrics = (run_dir / "orchestrator" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == steps
    # Every rollout of every step (the sample log) came from the package's dataset file.
    logged = pq.read_table(sorted(run_dir.rglob("samples/step_*.parquet"))).to_pylist()
    assert len(logged) == steps * spec["orchestrator"]["batchSize"]
    prompts = {json.loads(row)["prompt"] for row in files["word-echo/word_echo/words.jsonl"].splitlines()}
    for row in logged:
        assert row["env"] == "word-echo" and json.loads(row["prompt"])[0]["content"] in prompts, row
    kept = sorted(int(p.name.removeprefix("step_")) for p in (run_dir / "rollouts").iterdir())
    for step in kept:  # what the trainer read: text samples of that environment
        batch = msgspec.msgpack.decode(
            batch_path(run_dir / "rollouts", step).read_bytes(), type=TrainingBatch
        )
        assert all(s.env == "word-echo" and s.mm_refs is None for s in batch.samples)
    assert (run_dir / "weights" / f"step_{steps}" / "DONE").is_file()


def test_an_unknown_environment_is_refused_before_anything_starts(tmp_path):
    config = tmp_path / "typo.yaml"
    doc = yaml.safe_load(readme_files()["word-echo.yaml"])
    doc["spec"]["envWorkers"]["environment"]["id"] = "word-ecko"
    config.write_text(yaml.safe_dump(doc))
    code, log = rlrun_local_file(config, tmp_path / "out", timeout=120)
    assert code != 0
    assert (
        "unknown environment 'word-ecko': installed environments are calculator [built-in], color-codeword"
        in log
    )


def test_envworkers_packages_install_the_wheel_from_a_wheels_dir_at_start(tmp_path, no_leftover_processes):
    """The same package, shipped as a wheel on the volume (air-gapped) and named in envWorkers.packages: the
    env-worker installs it into a virtualenv under the run dir and serves it; nothing is on PYTHONPATH."""
    files = readme_files()
    write_tree(tmp_path / "src", files)
    build_wheel(tmp_path / "src" / "word-echo", tmp_path / "wheels")
    doc = yaml.safe_load(files["word-echo.yaml"])
    doc["spec"]["orchestrator"]["maxSteps"] = 2
    doc["spec"]["envWorkers"]["packages"] = {
        "requirements": ["word-echo"],
        "wheelsDir": str(tmp_path / "wheels"),
    }
    run_file = tmp_path / "word-echo-packages.yaml"
    run_file.write_text(yaml.safe_dump(doc))
    code, log = rlrun_local_file(run_file, tmp_path / "out", timeout=600)
    assert code == 0, log[-4000:]
    run_dir = tmp_path / "out" / "run_word-echo"
    [venv] = (run_dir / "envs").glob("venv-*")
    assert (venv / "DONE").read_text() == "word-echo\n"
    assert list(venv.glob("lib/python*/site-packages/word_echo/words.jsonl"))
    logged = pq.read_table(sorted(run_dir.rglob("samples/step_*.parquet"))).to_pylist()
    assert logged and {row["env"] for row in logged} == {"word-echo"}
