"""`rlrun local FILE [--resume] [--output-dir DIR]`: run one RLRun as local processes with a progress bar."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlrun.cli import command
from rlrun.operator.restarts import StallPolicy


def _local_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="RLRun YAML (the same file `kubectl apply` takes)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in the output dir")
    p.add_argument(
        "--output-dir", type=Path, default=Path("outputs"), help="asset root of the run (default ./outputs)"
    )
    p.add_argument(
        "--engine",
        choices=["vllm", "rlrun"],
        help="inference engine here (default: spec.inference.engine, else vllm with GPUs, else rlrun); "
        "vllm runs vLLM's CPU build from tools/vllm/build.sh (or $RLRUN_VLLM_PYTHON)",
    )
    p.add_argument(
        "--stall-seconds",
        type=float,
        default=StallPolicy().floor_seconds,
        help="no step advance for this long (or 5 x the median step time, if longer) is a stall: the trainer "
        "group's stacks are dumped and it is restarted per spec.failurePolicy (default: the operator's)",
    )


@command("local", "run an RLRun end to end on this machine (all roles as processes)", _local_args)
def local(args: argparse.Namespace) -> int:
    import yaml
    from pydantic import ValidationError
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rlrun.operator.api import RLRun, to_runtime_config
    from rlrun.runtime.local import Interrupted, RestartPolicy, RoleFailed, preflight, run_local

    console = Console(stderr=True)

    def error(text: str) -> None:  # user text: no markup, no wrapping inside paths
        console.print(text, style="red", markup=False, highlight=False, soft_wrap=True)

    try:
        docs = [d for d in yaml.safe_load_all(args.file.read_text()) if d]
    except OSError as e:
        error(f"{args.file}: cannot read it: {e.strerror or e}")
        return 2
    except yaml.YAMLError as e:
        error(f"{args.file}: not valid YAML: {e}")
        return 2
    if len(docs) != 1:
        error(f"{args.file}: expected exactly one RLRun document, found {len(docs)}")
        return 2
    try:
        run = RLRun.model_validate(docs[0])
    except ValidationError as e:
        error(f"{args.file}: invalid RLRun:\n{e}")
        return 2
    cfg = to_runtime_config(
        run.metadata.name, run.spec, asset_root=str(args.output_dir.expanduser().resolve())
    )
    if problems := preflight(cfg):
        error(f"{args.file}: " + "\n".join(problems))
        return 2
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("reward {task.fields[reward]}  step {task.fields[step_s]}"),
        TimeElapsedColumn(),
        console=console,
    )
    task = bar.add_task(cfg.run_id, total=cfg.orchestrator.max_steps, reward="-", step_s="-")

    def on_progress(p) -> None:  # rlrun.runtime.config.Progress
        reward = "-" if p.reward_mean is None else f"{p.reward_mean:.3f}"
        step_s = "-" if p.step_seconds is None else f"{p.step_seconds:.2f}s"
        bar.update(task, completed=p.step, reward=reward, step_s=step_s)

    console.print(f"run directory: {cfg.run_dir}  (logs in {cfg.run_dir / 'logs'})")
    try:
        with bar:
            summary = run_local(
                cfg,
                resume=args.resume,
                on_progress=on_progress,
                engine=args.engine or run.spec.inference.engine_name,
                inference_replicas=run.spec.inference.replicas,
                on_started=lambda urls: console.print(
                    "metrics: " + "  ".join(f"{role} {url}" for role, url in urls.items()),
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                ),
                policy=RestartPolicy(
                    max_restarts=run.spec.failure_policy.max_restarts,
                    backoff=run.spec.failure_policy.backoff,
                    stall_factor=StallPolicy().factor,
                    stall_floor_seconds=args.stall_seconds,
                ),
                on_event=lambda message: console.print(
                    message, markup=False, highlight=False, soft_wrap=True
                ),
            )
    except RoleFailed as failure:
        error(f"{failure}: {failure.error_line or '(no error line in its log)'}")
        console.print(f"full log: {failure.log_path}; every role was stopped. Last lines of the log:",
                      markup=False, highlight=False, soft_wrap=True)  # fmt: skip
        console.print(failure.log_tail, markup=False, highlight=False)
        return 1
    except (KeyboardInterrupt, Interrupted) as stop:
        console.print(f"interrupted ({str(stop) or 'SIGINT'}): every role was stopped; continue with --resume",
                      markup=False, highlight=False, soft_wrap=True)  # fmt: skip
        return 130
    except (FileExistsError, FileNotFoundError) as e:
        error(str(e))
        return 2
    print(
        f"done: {summary['steps']} steps in {summary['seconds']:.0f}s, reward "
        f"{summary['reward_first']:.3f} -> {summary['reward_last']:.3f}; "
        f"curve: {Path(summary['run_dir']) / 'reward_curve.png'}",
        file=sys.stdout,
    )
    return 0
