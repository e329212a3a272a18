"""The trainer's lineage: which groups its current weights were trained on, across resumes."""

from rlrun.runtime.trainer.lineage import append_record, lineage, read_records


def test_a_resume_rolls_back_the_steps_after_its_checkpoint(tmp_path):
    path = tmp_path / "trained.jsonl"
    append_record(path, {"attempt": 0, "resumedFrom": 0})
    for step in range(5):
        append_record(path, {"step": step, "attempt": 0, "groups": [2 * step, 2 * step + 1]})
    append_record(path, {"attempt": 1, "resumedFrom": 3})  # steps 3 and 4 are not in checkpoint 3
    append_record(path, {"step": 3, "attempt": 1, "groups": [6]})
    with path.open("a") as f:
        f.write('{"step": 4, "att')  # the line a kill cut short
    assert lineage(read_records(path)) == {0: [0, 1], 1: [2, 3], 2: [4, 5], 3: [6]}


def test_no_file_is_no_lineage(tmp_path):
    assert lineage(read_records(tmp_path / "trained.jsonl")) == {}
