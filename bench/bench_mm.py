"""Benchmark: image refs vs pixels on the rollout -> trainer path, and materialization throughput.

    .venv/bin/python bench/bench_mm.py                       # ~2 min on 2 shared cores
    .venv/bin/python bench/bench_mm.py --pixel-rollouts 16   # a bigger pixel batch (needs ~3 GB RAM)

Measures, each next to its baseline in the same run, with the default Qwen2-VL image processor settings
(patch 14, merge 2, max_pixels 28*28*1280: a 1024x1024 image becomes 4900 patches = 23 MB of float32):
  1. bytes on the wire per image: `MMRefs` in a msgpack TrainingSample vs encoded `pixel_values`;
  2. orchestrator peak RSS building one step's batch of rollouts x 4 distinct 1024x1024 images, each path
     in a fresh process: refs at the full batch size, pixels at a smaller one (it grows linearly: 23 MB
     per image) and extrapolated;
  3. materialization images/s at 1024x1024 (distinct images, and each image in 4 slots) vs the bare
     processor: read + decode + process every slot sequentially, then concatenate (the same output);
     then, where torchvision is importable, the PIL processor rlrun loads vs transformers' torchvision one
     on the same images (images/s per core, one torch thread) and how far apart their pixel_values are
     (runtime/mm/processor.py says why rlrun keeps PIL; the venv has no torchvision, so to re-measure:
     `uv pip install --python .venv/bin/python torchvision==0.29.1`, torch 2.14's release).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch
from PIL import Image
from transformers import Qwen2VLImageProcessorPil

from rlrun.runtime.assets import RunTree, atomic_write_bytes, uri_to_path, write_image
from rlrun.runtime.mm import (
    Geometry,
    Materializer,
    collect_mm_refs,
    describe_images,
    encode_mm_kwargs,
    image_token_count,
    load_image_processor,
    process_image,
)
from rlrun.runtime.wire import MMRefs, TrainingBatch, TrainingSample, pack_floats, pack_ints

SIDE = 1024
IMAGES_PER_ROLLOUT = 4
IMAGE_TOKEN = 151655


def make_jpeg(seed: int) -> bytes:
    """A 1024x1024 picture-like JPEG (smooth gradients plus noise), ~100-300 KB."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) / SIDE
    phase = rng.random(3) * 6.28
    channels = [127 + 120 * np.sin(6 * xx + 4 * yy * (c + 1) + phase[c]) for c in range(3)]
    pixels = np.stack(channels, -1) + rng.normal(0, 6, (SIDE, SIDE, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def sample_for(
    refs: MMRefs, merge: int, mm_kwargs: dict[str, Any] | None = None, *, text_only: bool = False
) -> TrainingSample:
    """One sample whose prompt holds the image tokens of `refs`; it carries refs, pixels, or (baseline) neither."""
    grids = [item["image_grid_thw"] for item in refs.descriptor["mm_items"]["image"]]
    prompt = [1] + [IMAGE_TOKEN] * sum(image_token_count(g, merge) for g in grids) + list(range(2, 66))
    return TrainingSample(
        prompt_ids=pack_ints(prompt),
        completion_ids=pack_ints(range(32)),
        completion_logprobs=pack_floats(np.zeros(32)),
        advantage=0.5,
        reward=1.0,
        mm_kwargs=mm_kwargs,
        mm_refs=None if mm_kwargs is not None or text_only else refs,
    )


class PeakRSS:
    """Samples this process's RSS every 2 ms in a thread: the peak of one phase, not of the imports."""

    def __init__(self) -> None:
        self.before = rss_mb()
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_mb())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, rss_mb())
        return self.peak


def rollout_refs(processor: Any, uris: list[str]) -> MMRefs:
    """What the orchestrator holds for one rollout: messages with file refs, and their descriptor."""
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": u}} for u in uris]}]
    return collect_mm_refs(describe_images(processor, uris), messages)


# ------------------------------------------------------------------------------------ 1. wire bytes


def wire_bytes(processor: Any, uris: list[str]) -> dict[str, float]:
    merge = Geometry.of(processor).merge_size
    refs = rollout_refs(processor, uris)
    text_only = len(msgspec.msgpack.encode(sample_for(refs, merge, text_only=True)))
    with_refs = len(msgspec.msgpack.encode(sample_for(refs, merge)))
    with Materializer(processor) as materializer:
        kwargs = encode_mm_kwargs(materializer.materialize(refs))
    with_pixels = len(msgspec.msgpack.encode(sample_for(refs, merge, kwargs)))
    n = len(uris)
    return {
        "refs_per_image": (with_refs - text_only) / n,
        "pixels_per_image": (with_pixels - text_only) / n,
        "uri_chars": len(uris[0]),
    }


# --------------------------------------------------------------------------------- 2. orchestrator RSS


def build_batch(mode: str, model_dir: Path, root: Path, rollouts: int) -> dict[str, float]:
    """Child process: build and write one step's batch the way the orchestrator does, report peak RSS."""
    torch.set_num_threads(1)
    processor = load_image_processor(model_dir)
    tree = RunTree(root, "bench")
    uris = sorted(p.as_uri() for p in tree.images_dir.iterdir())[:IMAGES_PER_ROLLOUT]
    merge = Geometry.of(processor).merge_size
    materializer = Materializer(processor) if mode == "pixels" else None
    rss = PeakRSS()
    start = time.perf_counter()
    samples = []
    for _ in range(rollouts):
        refs = rollout_refs(processor, uris)
        kwargs = encode_mm_kwargs(materializer.materialize(refs)) if materializer else None
        samples.append(sample_for(refs, merge, kwargs))
    data = msgspec.msgpack.encode(TrainingBatch(step=0, samples=samples))
    atomic_write_bytes(tree.rollouts_dir / f"{mode}.msgpack", data)
    seconds = time.perf_counter() - start
    peak = rss.stop()
    (tree.rollouts_dir / f"{mode}.msgpack").unlink()
    return {"before_mb": rss.before, "peak_mb": peak, "batch_mb": len(data) / 2**20, "seconds": seconds}


def start_children(jobs: list[tuple[str, int]], model_dir: Path, root: Path) -> list[subprocess.Popen[str]]:
    """Each path in its own fresh process, started together (importing torch costs ~10-40 s here)."""
    base = [sys.executable, __file__, "--model-dir", str(model_dir), "--root", str(root)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    return [
        subprocess.Popen(
            [*base, "--child", mode, "--rollouts", str(n)], stdout=subprocess.PIPE, text=True, env=env
        )
        for mode, n in jobs
    ]


def collect(procs: list[subprocess.Popen[str]]) -> list[dict[str, float]]:
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=400)
        if proc.returncode:
            raise RuntimeError(f"child {proc.args} failed with exit code {proc.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


# ------------------------------------------------------------------------------------- 3. throughput


def bare(processor: Any, uris: list[str]) -> float:
    """Seconds for the bare processor to produce the same pixel_values: every slot, sequentially."""
    start = time.perf_counter()
    parts = []
    for uri in uris:
        with Image.open(io.BytesIO(uri_to_path(uri).read_bytes())) as image:
            parts.append(process_image(processor, image)[0])
    pixels = torch.from_numpy(np.concatenate(parts))
    seconds = time.perf_counter() - start
    del pixels, parts
    return seconds


def materialized(processor: Any, refs: MMRefs, concurrency: int) -> float:
    with Materializer(processor, concurrency=concurrency) as materializer:
        start = time.perf_counter()
        out = materializer.materialize(refs)
        seconds = time.perf_counter() - start
    del out
    return seconds


def throughput(processor: Any, uris: list[str], reps: int) -> list[tuple[str, int, float, float]]:
    """Best-of-`reps` images/s; bare and Materializer runs alternate so load swings hit both alike."""
    bare(processor, uris[:1])  # warm-up: first-call allocations and lazy imports
    rows = []
    for label, slots in (("distinct", uris), ("4x duplicated", [u for u in uris for _ in range(4)])):
        refs = rollout_refs(processor, slots)
        base: list[float] = []
        ours: dict[int, list[float]] = {1: [], 4: []}
        for _ in range(reps):
            base.append(bare(processor, slots))
            for concurrency, times in ours.items():
                times.append(materialized(processor, refs, concurrency))
        for concurrency, times in ours.items():
            name = f"{label}, concurrency {concurrency}"
            rows.append((name, len(slots), len(slots) / min(base), len(slots) / min(times)))
    return rows


def torchvision_processor(model_dir: Path) -> Any | None:
    """transformers' torchvision Qwen2-VL processor from the same settings, or None without torchvision."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return None
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor.from_pretrained(str(model_dir))


def compare_processors(pil: Any, tv: Any, uris: list[str], reps: int) -> dict[str, float]:
    """Best-of-`reps` bare images/s of each processor (alternating) and the max |diff| of their pixels."""
    bare(tv, uris[:1])  # warm-up, as throughput() does for the PIL one
    pil_s: list[float] = []
    tv_s: list[float] = []
    for _ in range(reps):
        pil_s.append(bare(pil, uris))
        tv_s.append(bare(tv, uris))
    max_diff = 0.0
    differing = 0
    for uri in uris:
        with Image.open(io.BytesIO(uri_to_path(uri).read_bytes())) as image:
            a, grid_a = process_image(pil, image)
            b, grid_b = process_image(tv, image)
        if grid_a != grid_b or a.shape != b.shape:
            raise AssertionError(f"grids differ: PIL {grid_a} vs torchvision {grid_b}")
        diff = float(np.abs(a - b).max())
        max_diff = max(max_diff, diff)
        differing += diff > 0
    return {
        "pil": len(uris) / min(pil_s),
        "torchvision": len(uris) / min(tv_s),
        "max_diff": max_diff,
        "differing": differing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rollouts", type=int, default=256, help="rollouts per batch for the refs path")
    parser.add_argument("--pixel-rollouts", type=int, default=8, help="rollouts per batch for the pixel path")
    parser.add_argument("--distinct", type=int, default=8, help="distinct images for the throughput test")
    parser.add_argument("--reps", type=int, default=3, help="repetitions; the best is reported")
    parser.add_argument("--child", choices=["refs", "pixels"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(build_batch(args.child, args.model_dir, args.root, args.rollouts)))
        return

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        Qwen2VLImageProcessorPil().save_pretrained(model_dir)  # the stock Qwen2-VL settings
        processor = load_image_processor(model_dir)
        tree = RunTree(Path(tmp) / "outputs", "bench").ensure()
        jpegs = [make_jpeg(seed) for seed in range(max(args.distinct, IMAGES_PER_ROLLOUT))]
        uris = [write_image(tree.images_dir, data, "image/jpeg").as_uri() for data in jpegs]
        print(
            f"images: {len(jpegs)} x {SIDE}x{SIDE} JPEG, mean {np.mean([len(j) for j in jpegs]) / 1024:.0f} KiB"
        )

        jobs = [("refs", args.rollouts), ("pixels", args.pixel_rollouts)]
        children = start_children(jobs, model_dir, tree.root)
        wire = wire_bytes(processor, sorted(uris)[:IMAGES_PER_ROLLOUT])
        print("\n1. bytes on the wire per image (msgpack TrainingSample, marginal over a text-only sample)")
        print(
            f"   refs:   {wire['refs_per_image']:.0f} B  (of which the file URI: {wire['uri_chars']} chars)"
        )
        print(f"   pixels: {wire['pixels_per_image']:.0f} B  ({wire['pixels_per_image'] / 2**20:.1f} MiB)")
        print(f"   ratio:  {wire['pixels_per_image'] / wire['refs_per_image']:.0f}x")

        print(f"\n2. orchestrator batch of rollouts x {IMAGES_PER_ROLLOUT} distinct {SIDE}x{SIDE} images")
        results = [(m, n, r) for (m, n), r in zip(jobs, collect(children), strict=True)]
        print("   path    rollouts  RSS before  peak RSS  growth   batch file   seconds (both ran at once)")
        for mode, n, r in results:
            growth = r["peak_mb"] - r["before_mb"]
            print(
                f"   {mode:<7} {n:>8}  {r['before_mb']:>7.0f} MB  {r['peak_mb']:>5.0f} MB  {growth:>5.0f} MB"
                f"  {r['batch_mb']:>8.2f} MB  {r['seconds']:>7.2f}"
            )
        pixels = results[1][2]
        per_rollout = (pixels["peak_mb"] - pixels["before_mb"]) / args.pixel_rollouts
        print(
            f"   pixels extrapolated to {args.rollouts} rollouts: ~{per_rollout * args.rollouts / 1024:.1f} GB "
            f"growth, batch file ~{pixels['batch_mb'] / args.pixel_rollouts * args.rollouts / 1024:.1f} GB"
        )

        print(
            f"\n3. materialization at {SIDE}x{SIDE} (best of {args.reps}; bare = sequential read+decode+process)"
        )
        print("   case                          slots   bare img/s   Materializer img/s   ratio")
        for label, slots, base, ours in throughput(processor, sorted(uris)[: args.distinct], args.reps):
            print(f"   {label:<29} {slots:>5}   {base:>10.2f}   {ours:>18.2f}   {ours / base:>5.2f}x")
        tv = torchvision_processor(model_dir)
        if tv is None:
            print("   torchvision not importable: PIL vs torchvision processor skipped")
        else:
            c = compare_processors(processor, tv, sorted(uris)[: args.distinct], args.reps)
            n = len(uris[: args.distinct])
            print(f"   bare processor, {n} distinct images, 1 torch thread (images/s per core):")
            print(
                f"   PIL {c['pil']:.2f}   torchvision {c['torchvision']:.2f}   ratio {c['torchvision'] / c['pil']:.2f}x"
            )
            print(
                f"   pixel_values max |PIL - torchvision| = {c['max_diff']:.6g} ({c['differing']}/{n} images differ)"
            )


if __name__ == "__main__":
    main()
