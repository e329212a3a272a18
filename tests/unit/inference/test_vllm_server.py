"""The vLLM launcher's pure part (real vLLM runs in tests/integration/vllm, from its own virtualenv)."""

from __future__ import annotations

from rlrun.runtime.config import RuntimeConfig
from rlrun.runtime.inference.vllm_server import EXTENSION, VLLM_WAITING, vllm_argv, vllm_waiting


def test_vllm_argv_serves_the_rlrun_contract() -> None:
    config = RuntimeConfig.model_validate(
        {"assetRoot": "/data/outputs", "model": {"name": "Qwen/Qwen2-VL-2B-Instruct"}}
    )
    argv = vllm_argv("Qwen/Qwen2-VL-2B-Instruct", config, "0.0.0.0", 8000, ["--max-model-len", "4096"])
    flags = dict(zip(argv[0::2], argv[1::2], strict=False))
    assert flags["--model"] == "Qwen/Qwen2-VL-2B-Instruct"  # a flag: vLLM's parser drops a positional
    assert "--enforce-eager" not in argv and "--dtype" not in argv  # GPU: CUDA graphs, the model's dtype
    assert flags["--allowed-local-media-path"] == "/data/outputs"
    assert flags["--worker-extension-cls"] == EXTENSION
    assert flags["--logprobs-mode"] == "processed_logprobs"  # the trainer divides logits by T too
    assert argv[-2:] == ["--max-model-len", "4096"]
    cpu = vllm_argv("m", config, "0.0.0.0", 8000, ["--max-model-len", "4096"], cpu=True)
    assert cpu[-2:] == ["--max-model-len", "4096"], "the user's arguments come last and win"
    assert "--enforce-eager" in cpu and cpu[cpu.index("--max-num-batched-tokens") + 1] == "16384"
    module, _, cls = EXTENSION.rpartition(".")
    assert hasattr(__import__(module, fromlist=[cls]), cls), "the extension path must import"


def test_the_gpu_image_installs_the_vllm_release_the_tests_run() -> None:
    """CPU build in tests (tools/vllm/build.sh), CUDA build in the image: one version, pinned twice."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    tested = re.search(r"^VLLM_VERSION=(\S+)$", (repo / "tools/vllm/build.sh").read_text(), re.M)
    shipped = re.search(r"^ARG VLLM_VERSION=(\S+)$", (repo / "Dockerfile").read_text(), re.M)
    assert tested and shipped and tested[1] == shipped[1], (tested, shipped)


def test_local_vllm_engine_without_its_virtualenv_says_how_to_build_it(tmp_path) -> None:
    import pytest

    from rlrun.runtime.local import vllm_python

    with pytest.raises(FileNotFoundError, match=r"tools/vllm/build\.sh.*--engine rlrun"):
        vllm_python({"RLRUN_VLLM_PYTHON": str(tmp_path / "missing" / "python")})
    python = tmp_path / "python"
    python.write_text("")
    assert vllm_python({"RLRUN_VLLM_PYTHON": str(python)}) == python


def test_the_queue_depth_mirrors_vllms_waiting_requests_over_every_engine() -> None:
    """vLLM's gauge (labelled per engine) summed; a registry vLLM has not filled yet reads 0."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    assert vllm_waiting(registry) == 0
    waiting = Gauge(VLLM_WAITING, "waiting", ["model_name", "engine"], registry=registry)
    waiting.labels("tiny", "0").set(3)
    waiting.labels("tiny", "1").set(2)
    assert vllm_waiting(registry) == 5
