"""Inference samples from the pixels the trainer trains on, for every kind of image an environment may send.

The inference side is a real chat request to the real server, with a spy on the engine's vision inputs
(the pixel_values its model receives); the trainer side is the real `Materializer` the data ranks use,
built from the same model directory. Transparency is composited on white on both sides (as the HF
processor's `convert_to_rgb` does); inference once dropped alpha and sampled from black.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from rlrun.runtime.assets import write_content_addressed
from rlrun.runtime.mm import Materializer, describe_images, load_image_processor
from rlrun.runtime.wire import MMRefs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from image_modes import MODES


@pytest.fixture(scope="module")
def trainer_materializer(tiny_model: Path, run_tree: tuple[Path, Path]) -> Iterator[Materializer]:
    with Materializer(load_image_processor(tiny_model), root=run_tree[1]) as m:  # as a data rank builds it
        yield m


@pytest.mark.parametrize("mode", list(MODES))
def test_inference_and_trainer_see_identical_pixels(
    mode: str, served, run_tree, trainer_materializer: Materializer, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, extension = MODES[mode]
    path = write_content_addressed(run_tree[1] / "assets" / "images", make(), extension)
    url = path.as_uri()

    seen: list[dict[str, torch.Tensor]] = []
    real = served.engine._vision_inputs

    def spy(requests):  # type: ignore[no-untyped-def]  # records what the model is fed; changes nothing
        out = real(requests)
        seen.append({k: v.detach().clone() for k, v in out.items()})
        return out

    monkeypatch.setattr(served.engine, "_vision_inputs", spy)
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Codeword?"}]
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 1}
    resp = httpx.post(f"{served.url}/v1/chat/completions", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    (inference,) = seen

    descriptor = describe_images(trainer_materializer.processor, [url], root=run_tree[1])
    trained = trainer_materializer.materialize(MMRefs(descriptor=descriptor, uris=[url]))

    assert trained.image_grid_thw.tolist() == inference["image_grid_thw"].tolist()
    assert torch.equal(trained.pixel_values, inference["pixel_values"].float()), mode
