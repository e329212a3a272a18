"""`rlrun retention FILE|RUN_DIR [--dry-run]`: what the run's retention policy deletes from its asset tree.

FILE is an RLRun YAML (its run directory is `<--output-dir>/run_<name>`, its policy the file's `retention`);
RUN_DIR is a run directory (its policy the `retention` of its `config.json`). The report lists every path
with its size and the bytes freed, and the checkpoints kept for their score (`keepBest`) with that score;
without --dry-run the same list is deleted (what the trainer does after each checkpoint,
runtime/retention.py). Torch-free: it runs wherever the CLI does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlrun.cli import command


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", type=Path, help="RLRun YAML, or a run directory (holding config.json)")
    p.add_argument(
        "--output-dir", type=Path, default=Path("outputs"), help="asset root for a FILE (./outputs)"
    )
    p.add_argument("--dry-run", action="store_true", help="report only; delete nothing")
    p.add_argument("--json", action="store_true", help="the report as JSON")


@command("retention", "report (--dry-run) or apply the retention policy of a run's asset tree", _args)
def retention(args: argparse.Namespace) -> int:
    import yaml
    from pydantic import ValidationError

    from rlrun.runtime.config import RuntimeConfig
    from rlrun.runtime.retention import apply, decide

    target: Path = args.target
    try:
        if target.is_dir():
            cfg = RuntimeConfig.model_validate_json((target / "config.json").read_text())
            run_dir = target
        else:
            from rlrun.operator.api import RLRun, to_runtime_config

            run = RLRun.model_validate(yaml.safe_load(target.read_text()))
            root = str(args.output_dir.expanduser().resolve())
            cfg = to_runtime_config(run.metadata.name, run.spec, asset_root=root)
            run_dir = cfg.run_dir
    except (OSError, ValueError, ValidationError, yaml.YAMLError) as e:
        print(f"{target}: cannot read a run from it: {e}", file=sys.stderr)
        return 2
    if not run_dir.is_dir():
        print(f"{target}: no run directory at {run_dir}", file=sys.stderr)
        return 2
    decided = decide(run_dir, cfg.retention)
    deletions = decided.delete
    freed = sum(d.bytes for d in deletions) if args.dry_run else apply(deletions)
    if args.json:
        items = [{"path": str(d.path), "bytes": d.bytes, "why": d.why} for d in deletions]
        best = [
            {
                "path": str(k.path),
                "step": k.step,
                "rewardMean": k.score.reward_mean,
                "rollouts": k.score.rollouts,
                "why": k.why,
            }
            for k in decided.best
        ]
        report = {"runDir": str(run_dir), "dryRun": args.dry_run, "delete": items, "bytesFreed": freed}
        awaiting = [str(run_dir / "checkpoints" / f"step_{s}") for s in decided.awaiting_score]
        print(json.dumps({**report, "keepBest": best, "awaitingScore": awaiting}))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for k in decided.best:
        print(f"keeps {k.path}: {k.why}")
    for step in decided.awaiting_score:
        print(f"keeps {run_dir / 'checkpoints' / f'step_{step}'}: awaiting its score (keepBest)")
    for d in deletions:
        print(f"{verb} {d.path} ({d.bytes} bytes): {d.why}")
    print(f"{len(deletions)} paths, {freed} bytes {'would be ' if args.dry_run else ''}freed in {run_dir}")
    return 0
