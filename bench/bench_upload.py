"""Sample-upload benchmark: streamed PUT vs one in-memory body; sample-parquet writing vs pyarrow defaults.

    .venv/bin/python bench/bench_upload.py              # 1 GiB file, 3 rounds, ~2 min on 2 cores
    .venv/bin/python bench/bench_upload.py --mib 256    # quicker

Upload: a file of --mib MiB is PUT to a loopback HTTP sink that runs in its own process and only counts
bytes (an object store would measure its disk, not the client). Each client mode runs in a fresh
subprocess so peak RSS is its own: `streamed` is stream_put (chunks of several sizes from disk, explicit
Content-Length); `in-memory` is the old path (read the file into one bytes body, PUT it). RSS growth =
peak RSS sampled every 2 ms during the upload minus RSS just before it. Baselines in the same run:
`sendfile` (the kernel copies the file to the socket) and `readinto+sendall` (the best any user-space sender
can do: every HTTP library, and every sender over TLS, is one). Loopback figures swing from one upload to
the next on 2 cores, so the whole set runs --rounds times and the medians are compared at the end.
Target: streamed >= 80% of sendfile with <= 16 MB RSS growth for 1 GiB.

Parquet: the same rollouts (chat text + one ~96 KiB data URL each) written one rollout per row group by
write_samples_parquet (dictionary only on categorical columns; zstd and snappy) vs the same loop with
pyarrow's defaults (dictionary on every column, snappy). MB/s = parquet input bytes / wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CHILD_TIMEOUT_S = 300


def _sink_conn(conn: socket.socket) -> None:
    """Minimal HTTP/1.1 PUT sink: read the head, drain Content-Length bytes into one reused buffer,
    answer 200 (411 without Content-Length). Blocking recv_into keeps the sink off the critical path."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    pending = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in pending:
                data = conn.recv(65536)
                if not data:
                    return
                pending += data
            head, _, pending = pending.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").lower().split("\r\n")
            length = next((int(h.split(":")[1]) for h in lines if h.startswith("content-length:")), -1)
            if length < 0:
                conn.sendall(
                    b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            length -= len(pending)
            pending = b""
            while length > 0:
                n = conn.recv_into(view, min(length, len(buf)))
                if not n:
                    return
                length -= n
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


def _sink_main() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_sink_conn, args=(conn,), daemon=True).start()


def _raw_send(url: str, path: Path) -> dict[str, float]:
    """The ceiling: the kernel copies the file to the socket (sendfile), no Python in the byte path."""
    port = int(url.split(":")[2].split("/")[0])
    size = path.stat().st_size
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as conn, open(path, "rb") as f:
        conn.sendall(f"PUT /bucket/key HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
        conn.sendfile(f)
        assert conn.recv(1024).startswith(b"HTTP/1.1 200")
    seconds = time.perf_counter() - start
    return {"gbps": size / seconds / 1e9, "rss_growth_mb": 0.0, "seconds": seconds}


def _copy_send(url: str, path: Path, chunk: int) -> dict[str, float]:
    """The ceiling of any client that sends from user space (every HTTP library, and all of them over TLS):
    `readinto` one reused buffer, `sendall` it. Two copies per byte (page cache -> buffer -> socket) where
    sendfile makes one, and no HTTP framing, no event loop, no allocation in the byte path."""
    port = int(url.split(":")[2].split("/")[0])
    size = path.stat().st_size
    buffer = memoryview(bytearray(chunk))
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as conn, open(path, "rb", buffering=0) as f:
        conn.sendall(f"PUT /bucket/key HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
        while n := f.readinto(buffer):
            conn.sendall(buffer[:n])
        assert conn.recv(1024).startswith(b"HTTP/1.1 200")
    seconds = time.perf_counter() - start
    return {"gbps": size / seconds / 1e9, "rss_growth_mb": 0.0, "seconds": seconds}


def _client(mode: str, url: str, path: Path, chunk: int) -> dict[str, float]:
    import httpx
    import psutil

    from rlrun.runtime.upload import stream_put

    proc = psutil.Process()
    size = path.stat().st_size

    async def upload() -> None:
        async with httpx.AsyncClient() as client:
            if mode == "streamed":
                await stream_put(url, path, client=client, chunk_bytes=chunk)
            else:
                body = path.read_bytes()  # the old path: the whole file as one in-RAM body
                response = await client.put(url, content=body, timeout=600)
                response.raise_for_status()

    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.002):
            peak[0] = max(peak[0], proc.memory_info().rss)

    asyncio.run(asyncio.sleep(0))  # warm the loop machinery before the baseline
    base = proc.memory_info().rss
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    asyncio.run(upload())
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    return {"gbps": size / seconds / 1e9, "rss_growth_mb": (peak[0] - base) / 1e6, "seconds": seconds}


def _make_file(path: Path, mib: int) -> None:
    block = os.urandom(64 << 20)
    with open(path, "wb") as f:
        for _ in range(mib // 64):
            f.write(block)
        f.write(block[: (mib % 64) << 20])


def _bench_upload(mib: int, workdir: Path, rounds: int) -> None:
    path = workdir / "upload.bin"
    _make_file(path, mib)
    sink = subprocess.Popen([sys.executable, __file__, "--sink"], stdout=subprocess.PIPE, text=True)
    gbps: dict[str, list[float]] = {}
    try:
        assert sink.stdout is not None
        url = f"http://127.0.0.1:{int(sink.stdout.readline())}/bucket/key?X-Amz-Signature=bench"
        print(f"\nupload of {mib} MiB to a loopback HTTP sink (own process); each client in a fresh process")
        path.read_bytes()  # page-cache the file so no mode pays for the disk
        for round_ in range(1, rounds + 1):
            print(f"\nround {round_}/{rounds}\n{'mode':<26}{'GB/s':>8}{'RSS growth MB':>16}")
            runs = [
                ("sendfile", lambda: _raw_send(url, path)),
                ("readinto+sendall 1 MiB", lambda: _copy_send(url, path, 1 << 20)),
            ]
            modes = [("in-memory", 0)] if round_ == 1 else []  # 3 GB of RSS: once is enough
            modes += [("streamed", size) for size in (64 << 10, 1 << 20, 4 << 20, 8 << 20)]
            for mode, chunk in modes:
                label = mode if mode == "in-memory" else f"streamed {chunk >> 10} KiB chunks"
                args = [sys.executable, __file__, "--client", mode, url, str(path), str(chunk)]
                runs.append((label, lambda args=args: _child(args)))
            for label, run in runs:
                r = run()
                gbps.setdefault(label, []).append(r["gbps"])
                rss = f"{r['rss_growth_mb']:.1f}" if r["rss_growth_mb"] else "-"
                print(f"{label:<26}{r['gbps']:>8.2f}{rss:>16}", flush=True)
    finally:
        sink.kill()
        sink.wait(10)
        path.unlink(missing_ok=True)
    median = {label: statistics.median(values) for label, values in gbps.items()}
    print(f"\nmedians over {rounds} rounds: ratio to sendfile and to readinto+sendall")
    for label, value in median.items():
        to_sendfile = value / median["sendfile"]
        to_copy = value / median["readinto+sendall 1 MiB"]
        print(f"{label:<26}{value:>8.2f}{to_sendfile:>8.0%}{to_copy:>8.0%}")


def _child(args: list[str]) -> dict[str, float]:
    out = subprocess.run(args, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _bench_parquet(workdir: Path, rollouts_n: int = 400) -> None:
    import base64

    import pyarrow as pa
    import pyarrow.parquet as pq

    from rlrun.runtime.upload.parquet import SAMPLE_SCHEMA, sample_row, write_samples_parquet

    image = "data:image/png;base64," + base64.b64encode(os.urandom(72 << 10)).decode()
    text = "The quick brown fox jumps over the lazy dog. " * 200
    rollouts = [
        {
            "example_id": f"ex{i // 8}",
            "env": "color-codeword",
            "prompt": [
                {"role": "system", "content": text},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]},
            ],
            "completion": text[: 2000 + i],
            "reward": float(i % 2),
            "advantage": 0.1 * i,
            "num_prompt_tokens": 3000,
            "num_completion_tokens": 500,
        }
        for i in range(rollouts_n)
    ]
    input_mb = sum(len(json.dumps(r["prompt"])) + len(r["completion"]) for r in rollouts) / 1e6

    def defaults() -> Path:
        path = workdir / "defaults.parquet"
        with pq.ParquetWriter(path, SAMPLE_SCHEMA) as writer:  # pyarrow defaults: snappy, dictionary on
            for r in rollouts:
                writer.write_table(pa.Table.from_pylist([sample_row(0, r)], schema=SAMPLE_SCHEMA))
        return path

    print(f"\nsample parquet: {rollouts_n} rollouts, {input_mb:.0f} MB of row text, a row group per rollout")
    print(f"{'writer':<36}{'MB/s':>8}{'file MB':>10}")
    cases = [
        ("pyarrow defaults (snappy, dict all)", defaults),
        ("rlrun zstd, dict on ids only", lambda: write_samples_parquet(workdir, 0, rollouts, "zstd")),
        ("rlrun snappy, dict on ids only", lambda: write_samples_parquet(workdir, 0, rollouts, "snappy")),
    ]
    for label, write in cases:
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            path = write()
            best = min(best, time.perf_counter() - start)
            assert path is not None
            size = path.stat().st_size
            path.unlink()
        print(f"{label:<36}{input_mb / best:>8.0f}{size / 1e6:>10.1f}")


def main() -> None:
    raw_help = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw_help)
    parser.add_argument("--mib", type=int, default=1024, help="upload file size in MiB")
    parser.add_argument("--rounds", type=int, default=3, help="upload rounds; medians are compared")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=4, metavar=("MODE", "URL", "PATH", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        _sink_main()
        return
    if args.client:
        mode, url, path, chunk = args.client
        print(json.dumps(_client(mode, url, Path(path), int(chunk))))
        return
    print(f"bench_upload: {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    # Beside the repo (disk-backed), like the sample logger's temp files, never a tmpfs.
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as tmp:
        _bench_parquet(Path(tmp))
        _bench_upload(args.mib, Path(tmp), args.rounds)


if __name__ == "__main__":
    main()
