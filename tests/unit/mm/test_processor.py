"""Loading the image processor from the model directory, and grids computed without decoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rlrun.runtime.mm import Geometry, load_image_processor, process_image


def test_loads_settings_from_model_dir(model_dir: Path) -> None:
    processor = load_image_processor(model_dir)
    geometry = Geometry.of(processor)
    assert (geometry.patch_size, geometry.merge_size, geometry.temporal_patch_size) == (14, 2, 2)
    assert (geometry.min_pixels, geometry.max_pixels) == (56 * 56, 14 * 14 * 4 * 64)
    assert geometry.patch_dim == 3 * 2 * 14 * 14


def test_missing_settings_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "preprocessor_config.json")):
        load_image_processor(tmp_path)


def test_missing_keys_and_wrong_type_are_named(tmp_path: Path, model_dir: Path) -> None:
    settings = json.loads((model_dir / "preprocessor_config.json").read_text())
    broken = {k: v for k, v in settings.items() if k not in ("merge_size", "size")}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(broken))
    with pytest.raises(
        ValueError, match=r"preprocessor_config.json: missing .*merge_size.*size\.shortest_edge"
    ):
        load_image_processor(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({**settings, "image_processor_type": "CLIPImageProcessor"})
    )
    with pytest.raises(ValueError, match="CLIPImageProcessor"):
        load_image_processor(tmp_path)


@pytest.mark.parametrize("size", [(64, 64), (20, 30), (300, 90), (224, 224), (500, 40), (57, 113)])
def test_header_grid_matches_the_processor(processor, kit, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    pixels, grid = process_image(processor, kit.make_image(1, size))
    assert Geometry.of(processor).grid(*size) == grid
    assert pixels.dtype == np.float32 and pixels.shape == (grid[0] * grid[1] * grid[2], 3 * 2 * 14 * 14)
