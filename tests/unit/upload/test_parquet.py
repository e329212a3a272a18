"""The sample parquet: one row group per rollout, images inlined, nothing left behind on failure."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from upload_helpers import PNG, rollout

from rlrun.runtime.upload.parquet import SAMPLE_SCHEMA, write_samples_parquet


def test_rows_round_trip_one_row_group_per_rollout(tmp_path: Path, asset_root: Path) -> None:
    img = asset_root / "run_t" / "assets" / "images" / "a.png"
    img.write_bytes(PNG)
    rollouts = [rollout(f"ex{i}", [img]) for i in range(3)]
    path = write_samples_parquet(tmp_path / "samples", 7, rollouts, "zstd", asset_root=asset_root)
    assert path is not None and path.parent == tmp_path / "samples"
    parquet = pq.ParquetFile(path)
    assert parquet.schema_arrow == SAMPLE_SCHEMA
    assert parquet.metadata.num_row_groups == 3
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    rows = parquet.read().to_pylist()
    assert [r["example_id"] for r in rows] == ["ex0", "ex1", "ex2"]
    assert rows[0] | {"prompt": None} == {
        "step": 7,
        "example_id": "ex0",
        "env": "color-codeword",
        "prompt": None,
        "completion": "a red square",
        "reward": 1.0,
        "advantage": 0.5,
        "num_prompt_tokens": 12,
        "num_completion_tokens": 3,
    }
    url = json.loads(rows[0]["prompt"])[0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")


def test_dictionary_and_statistics_only_where_they_pay(tmp_path: Path) -> None:
    path = write_samples_parquet(tmp_path, 0, [rollout("e", [])], "snappy")
    assert path is not None
    group = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {group.column(i).path_in_schema: group.column(i).encodings for i in range(group.num_columns)}
    assert "RLE_DICTIONARY" in encodings["env"]
    for column in ("prompt", "completion", "reward", "num_prompt_tokens"):
        assert "RLE_DICTIONARY" not in encodings[column], column
    stats = {group.column(i).path_in_schema: group.column(i).is_stats_set for i in range(group.num_columns)}
    assert stats["reward"] and stats["step"] and not stats["prompt"] and not stats["completion"]


def test_incomplete_rollouts_skipped_and_empty_leaves_nothing(tmp_path: Path) -> None:
    no_prompt = rollout("a", []) | {"prompt": None}
    no_completion = {k: v for k, v in rollout("b", []).items() if k != "completion"}
    assert write_samples_parquet(tmp_path, 3, [no_prompt, no_completion], "none") is None
    assert list(tmp_path.iterdir()) == []
    path = write_samples_parquet(tmp_path, 3, [no_prompt, rollout("c", [])], "none")
    assert path is not None and pq.read_table(path).column("example_id").to_pylist() == ["c"]


def test_failure_mid_write_removes_partial_file(tmp_path: Path) -> None:
    bad = rollout("bad", []) | {"reward": "not a number"}
    with pytest.raises(ValueError, match=r"step 4: rollout 1 \(example_id='bad'\) does not fit"):
        write_samples_parquet(tmp_path, 4, [rollout("ok", []), bad], "zstd")
    assert list(tmp_path.iterdir()) == []


def test_generator_input_is_consumed_one_rollout_at_a_time(tmp_path: Path) -> None:
    produced: list[int] = []

    def rollouts():
        for i in range(4):
            produced.append(i)
            yield rollout(f"e{i}", [])

    path = write_samples_parquet(tmp_path, 1, rollouts(), "zstd")
    assert path is not None and produced == [0, 1, 2, 3]
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
