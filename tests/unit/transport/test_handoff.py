"""Training-batch hand-off through files: atomic writes, waiting readers, precise errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgspec
import pytest

from rlrun.runtime.transport.handoff import batch_path, latest_batch_step, read_batch, write_batch
from rlrun.runtime.wire import TrainingBatch, TrainingSample, pack_floats, pack_ints


def batch(step: int) -> TrainingBatch:
    sample = TrainingSample(pack_ints([1, 2]), pack_ints([3, step]), pack_floats([-0.5, -1.0]), 0.25, 1.0)
    return TrainingBatch(step=step, samples=[sample])


def test_write_then_read_round_trips_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = write_batch(tmp_path, batch(4))
    assert path == tmp_path / "step_4" / "batch.msgpack"
    assert read_batch(tmp_path, 4, timeout=0) == batch(4)
    assert [p.name for p in path.parent.iterdir()] == ["batch.msgpack"]


def test_reader_waits_for_a_batch_written_later(tmp_path: Path) -> None:
    writer = threading.Timer(0.3, write_batch, args=(tmp_path, batch(2)))
    writer.start()
    started = time.monotonic()
    assert read_batch(tmp_path, 2, poll_seconds=0.02, timeout=5) == batch(2)
    assert time.monotonic() - started >= 0.25
    writer.join()


def test_temp_files_are_never_read_as_batches(tmp_path: Path) -> None:
    (tmp_path / "step_1").mkdir()
    (tmp_path / "step_1" / ".batch.msgpack.abc.tmp").write_bytes(b"\x93partial")
    assert latest_batch_step(tmp_path) is None
    with pytest.raises(
        TimeoutError, match=r"after 0\.1s waiting for the training batch .*step_1/batch\.msgpack"
    ):
        read_batch(tmp_path, 1, poll_seconds=0.02, timeout=0.1)


def test_should_stop_ends_the_wait(tmp_path: Path) -> None:
    with pytest.raises(InterruptedError, match=r"step_9/batch\.msgpack"):
        read_batch(tmp_path, 9, poll_seconds=0.01, should_stop=lambda: True)


def test_a_batch_filed_under_the_wrong_step_is_refused(tmp_path: Path) -> None:
    path = batch_path(tmp_path, 3)
    path.parent.mkdir()
    path.write_bytes(msgspec.msgpack.encode(batch(4)))
    with pytest.raises(ValueError, match=r"holds step 4, expected step 3"):
        read_batch(tmp_path, 3, timeout=0)


def test_a_corrupt_batch_names_its_path(tmp_path: Path) -> None:
    path = batch_path(tmp_path, 0)
    path.parent.mkdir()
    path.write_bytes(b"not msgpack at all")
    with pytest.raises(ValueError, match=r"step_0/batch\.msgpack is not a valid TrainingBatch"):
        read_batch(tmp_path, 0, timeout=0)


def test_latest_batch_step_ignores_incomplete_and_foreign_entries(tmp_path: Path) -> None:
    assert latest_batch_step(tmp_path / "missing") is None
    for step in (0, 2, 10):
        write_batch(tmp_path, batch(step))
    (tmp_path / "step_11").mkdir()  # no batch yet
    (tmp_path / "step_012").mkdir()  # not a name the writer produces
    (tmp_path / "step_012" / "batch.msgpack").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert latest_batch_step(tmp_path) == 10


@pytest.mark.parametrize("step", [-1, True, 1.0])
def test_steps_that_cannot_name_a_folder_are_refused(tmp_path: Path, step: object) -> None:
    with pytest.raises(ValueError, match="non-negative int"):
        batch_path(tmp_path, step)  # type: ignore[arg-type]
