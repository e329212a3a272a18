"""The vLLM launcher's pure part (vLLM itself needs a GPU and its own virtualenv, so it is not run here)."""

from __future__ import annotations

from rlrun.runtime.config import RuntimeConfig
from rlrun.runtime.inference.vllm_server import EXTENSION, vllm_argv


def test_vllm_argv_serves_the_rlrun_contract() -> None:
    config = RuntimeConfig.model_validate(
        {"assetRoot": "/data/outputs", "model": {"name": "Qwen/Qwen2-VL-2B-Instruct"}}
    )
    argv = vllm_argv("Qwen/Qwen2-VL-2B-Instruct", config, "0.0.0.0", 8000, ["--max-model-len", "4096"])
    flags = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert argv[0] == "Qwen/Qwen2-VL-2B-Instruct"
    assert flags["--allowed-local-media-path"] == "/data/outputs"
    assert flags["--worker-extension-cls"] == EXTENSION
    assert flags["--logprobs-mode"] == "processed_logprobs"  # the trainer divides logits by T too
    assert argv[-2:] == ["--max-model-len", "4096"]
    module, _, cls = EXTENSION.rpartition(".")
    assert hasattr(__import__(module, fromlist=[cls]), cls), "the extension path must import"
