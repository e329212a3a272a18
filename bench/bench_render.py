"""How long the operator's pure part takes: RLRun dict -> every child manifest, per run.

Baseline (same run): parsing the RLRun alone (pydantic validation), the floor any reconcile pays.
The figure that matters is render time per run against the ~0.5 s API round trip of a reconcile
(FIELD-NOTES): rendering must stay a rounding error of it, also for 100 runs.

    .venv/bin/python bench/render.py
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from rlrun.operator.api import RLRun
from rlrun.operator.render import render_children

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def _docs(n: int) -> list[dict]:
    base = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
    docs = []
    for i in range(n):
        doc = dict(base[i % len(base)])
        doc["metadata"] = {"name": f"run-{i}", "namespace": "bench", "uid": f"uid-{i}"}
        docs.append(doc)
    return docs


def _time(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    for n in (1, 100):
        docs = _docs(n)
        runs = [RLRun.model_validate(d) for d in docs]
        parse = _time(lambda docs=docs: [RLRun.model_validate(d) for d in docs], 5)
        render = _time(lambda runs=runs: [render_children(r) for r in runs], 5)
        children = sum(len(render_children(r)) for r in runs)
        print(
            f"{n:>3} runs ({children} children): render {render * 1e3 / n:.2f} ms/run "
            f"vs baseline parse-only {parse * 1e3 / n:.2f} ms/run"
        )


if __name__ == "__main__":
    main()
