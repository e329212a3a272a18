import torch
from safetensors.torch import load_file

from rlrun.runtime.trainer.checkpoint import complete_steps, latest_complete, load_checkpoint, save_checkpoint
from rlrun.runtime.trainer.weights import DONE, WEIGHTS_FILE, export_weights


def test_resume_skips_a_half_written_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 2, {"w": torch.tensor([2.0])})
    save_checkpoint(tmp_path, 4, {"w": torch.tensor([4.0])})
    half = tmp_path / "step_6"  # killed mid-save: state written, marker never
    half.mkdir()
    torch.save({"w": torch.tensor([6.0])}, half / "state.pt")
    assert latest_complete(tmp_path) == 4
    assert load_checkpoint(tmp_path, 4)["w"].item() == 4.0
    save_checkpoint(tmp_path, 6, {"w": torch.tensor([6.5])})  # the re-save replaces the leftover
    assert complete_steps(tmp_path) == [2, 4, 6]  # pruning is retention's (runtime/retention.py)
    assert load_checkpoint(tmp_path, 6)["w"].item() == 6.5
    assert not list(tmp_path.glob(".step_*"))


def test_no_checkpoint_means_fresh_start(tmp_path):
    assert latest_complete(tmp_path / "missing") is None


def test_weight_export_is_complete_untied_and_pruned(tmp_path):
    shared = torch.arange(4.0)
    for version in range(1, 6):
        export_weights(tmp_path, version, {"embed.weight": shared, "lm_head.weight": shared})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_3", "step_4", "step_5"]
    loaded = load_file(str(tmp_path / "step_5" / WEIGHTS_FILE))
    assert loaded["lm_head.weight"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert (tmp_path / "step_5" / DONE).read_text().strip() == "5"


def test_resumed_export_survives_the_interrupted_runs_later_exports(tmp_path):
    """Interrupted after exporting 11..14 with the last checkpoint at 10: the resume re-exports 10 first."""
    for version in range(8, 15):
        export_weights(tmp_path, version, {"w": torch.tensor([float(version)])})
    resumed = export_weights(tmp_path, 10, {"w": torch.tensor([10.5])})
    assert (resumed / DONE).is_file() and load_file(str(resumed / WEIGHTS_FILE))["w"].item() == 10.5
    # Kept: the re-export; the abandoned later trajectory (12..14; older ones were pruned meanwhile) is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_10"]
    for version in (11, 12, 13):
        export_weights(tmp_path, version, {"w": torch.tensor([version + 0.5])})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_11", "step_12", "step_13"]
