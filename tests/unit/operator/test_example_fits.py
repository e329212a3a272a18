"""The bundled CPU example schedules on a 2-core node: its pods' CPU requests, with the operator's own
(the chart's default), fit in 2 CPUs. It asked for 3 once and stayed Pending on such a node."""

from pathlib import Path

import yaml

from rlrun.operator.api import RLRun
from rlrun.operator.render import render_children

REPO = Path(__file__).resolve().parents[3]


def _cpu(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_cpu_example_fits_a_2_core_node_with_the_operator():
    run = RLRun.model_validate(yaml.safe_load((REPO / "manifests/examples/color-codeword.yaml").read_text()))
    total = 0.0
    for obj in render_children(run):
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        spec = obj["spec"]
        pods = spec.get("replicas", spec.get("parallelism", 1))
        for c in spec["template"]["spec"]["containers"]:
            total += pods * _cpu(str(c.get("resources", {}).get("requests", {}).get("cpu", "0")))
    operator = yaml.safe_load((REPO / "helm/rlrun/values.yaml").read_text())["resources"]["requests"]["cpu"]
    assert total + _cpu(str(operator)) <= 2.0, total
    assert total > 0, "the example must request CPU so the scheduler spreads it honestly"
