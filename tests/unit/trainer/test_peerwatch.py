"""The hang report reaches the restart Event on a cluster: it becomes the container's termination message."""

from rlrun.runtime.trainer.peerwatch import termination_message


def test_the_report_replaces_the_log_tail_as_termination_message_in_a_pod(tmp_path):
    path = tmp_path / "termination-log"  # the kubelet creates this file in every container
    path.write_text("")
    assert termination_message("hang: rank 1 is silent", str(path))
    assert path.read_text() == "hang: rank 1 is silent"


def test_outside_a_pod_nothing_is_written(tmp_path):
    assert not termination_message("hang", str(tmp_path / "absent"))
    assert not (tmp_path / "absent").exists()
