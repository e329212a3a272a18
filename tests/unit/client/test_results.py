"""The client's idea of the run layout equals the runtime's (the client may not import the runtime)."""

from pathlib import Path, PurePosixPath

from rlrun.client.results import SAMPLES_DIR, WEIGHTS_DIR, cluster_result, local_result
from rlrun.operator.api import RLRun
from rlrun.runtime.assets import RunTree
from rlrun.runtime.trainer.weights import DONE, weights_dir
from rlrun.runtime.upload.logger import SampleLogger
from rlrun.runtime.upload.presign import object_key


def run(**spec):
    return RLRun.model_validate(
        {"metadata": {"name": "r"}, "spec": spec, "status": {"phase": "Succeeded", "restarts": 2,
                                                              "progress": {"step": 4, "maxSteps": 4}}}
    )  # fmt: skip


def test_layout_names_match_the_runtime(tmp_path):
    tree = RunTree(tmp_path, "r")
    assert tree.weights_dir == tree.run_dir / WEIGHTS_DIR
    assert weights_dir(tree.weights_dir, 4) == tree.weights_dir / "step_4"
    logger = SampleLogger(run().spec.sample_upload, tree.run_dir, tmp_path, "r")
    assert logger.samples_dir == tree.run_dir / SAMPLES_DIR
    assert object_key("samples", "r", 3) == "samples/run_r/step_3.parquet"


def test_cluster_result_points_into_the_volume():
    res = cluster_result(run())
    assert (res.phase, res.restarts, res.volume_claim) == ("Succeeded", 2, "r-assets")
    assert res.run_dir == "/data/outputs/run_r"
    assert res.final_weights == str(PurePosixPath("/data/outputs/run_r/weights/step_4"))
    assert res.samples == "/data/outputs/run_r/samples/"
    s3 = cluster_result(
        run(storage={"existingClaim": "shared"}, sampleUpload={"enabled": True, "bucket": "b"})
    )
    assert s3.volume_claim == "shared" and s3.samples == "s3://b/samples/run_r/"


def test_local_result_finds_the_newest_complete_weights(tmp_path: Path):
    run_dir = tmp_path / "run_r"
    for step, done in ((2, True), (4, True), (5, False)):
        d = run_dir / WEIGHTS_DIR / f"step_{step}"
        d.mkdir(parents=True)
        if done:
            (d / DONE).write_text("x")
    assert local_result(run(), run_dir).final_weights == str(run_dir / "weights" / "step_4")
