"""Copy-truncate rotation keeps a role's log under its size bound while the role keeps appending."""

import os

from rlrun.runtime.logrotate import rotate_if_larger


def test_rotation_bounds_the_log_and_keeps_the_newest_backups(tmp_path):
    path = tmp_path / "trainer.log"
    with open(path, "ab", buffering=0) as writer:  # how a role holds its stdout: O_APPEND
        for chunk in (b"a" * 100, b"b" * 100, b"c" * 100, b"d" * 10):
            writer.write(chunk)
            rotate_if_larger(path, max_bytes=50, backups=2)
        writer.write(b"e")
    assert path.read_bytes() == b"d" * 10 + b"e"  # appends land at the new end, no hole
    assert path.with_name("trainer.log.1").read_bytes() == b"c" * 100
    assert path.with_name("trainer.log.2").read_bytes() == b"b" * 100
    assert sorted(os.listdir(tmp_path)) == ["trainer.log", "trainer.log.1", "trainer.log.2"]


def test_a_small_or_missing_log_is_left_alone(tmp_path):
    assert not rotate_if_larger(tmp_path / "none.log", 10, 1)
    (tmp_path / "small.log").write_text("x")
    assert not rotate_if_larger(tmp_path / "small.log", 10, 1)
