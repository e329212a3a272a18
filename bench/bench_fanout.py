"""Micro-batch fan-out throughput and per-step overhead, next to a raw TCP loopback baseline (same run).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_fanout.py            # ~1-2 minutes
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_fanout.py --quick    # fewer steps

Both sides move the same bytes the same way: one sender thread (the master) and one receiver thread per
rank, each rank getting its own payload every step. Raw TCP = `sendall` of a prebuilt buffer over one
socket per rank, `recv_into` a preallocated buffer: the ceiling for loopback. The fan-out = the real
MicroBatchPublisher / MicroBatchSubscriber: encode one MicroBatch (the payload as `input_ids`) into the reused
per-rank buffer, send zero-copy, receive, decode to views. Aggregate throughput = all ranks' payload bytes /
wall time from the first send to the last rank's receive (after one warm-up step).
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import threading
import time
from collections.abc import Callable

from rlrun.runtime.config import TransportConfig
from rlrun.runtime.transport.fanout import MicroBatchPublisher, MicroBatchSubscriber
from rlrun.runtime.wire import MicroBatch

MIB = 1 << 20
HEADER = 8  # raw baseline: a length prefix per message


def free_base_port() -> int:
    for _ in range(200):
        base = random.randrange(30000, 60000)
        try:
            for port in (base + 1, base + 2):
                with socket.socket() as sock:
                    sock.bind(("0.0.0.0", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free base port")


def run_threads(sender: Callable[[], None], receivers: list[Callable[[], None]]) -> float:
    threads = [threading.Thread(target=fn) for fn in receivers]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    sender()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def raw_tcp(ranks: int, payload: int, steps: int) -> float:
    """Seconds for `steps` steps of `payload` bytes to each of `ranks` receivers over plain TCP."""
    server = socket.create_server(("127.0.0.1", 0))
    server.listen(ranks)
    port = server.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(ranks)]
    conns = [server.accept()[0] for _ in range(ranks)]
    message = bytearray(HEADER + payload)
    message[:HEADER] = payload.to_bytes(HEADER, "little")

    def receiver(sock: socket.socket) -> Callable[[], None]:
        buffer = memoryview(bytearray(HEADER + payload))

        def run() -> None:
            for _ in range(steps + 1):
                got = 0
                while got < len(buffer):
                    got += sock.recv_into(buffer[got:])

        return run

    def sender() -> None:
        for _ in range(steps + 1):
            for conn in conns:
                conn.sendall(message)

    try:  # one step more than timed, standing for the fan-out's warm-up step
        return run_threads(sender, [receiver(sock) for sock in clients]) * steps / (steps + 1)
    finally:
        for sock in [*clients, *conns, server]:
            sock.close()


def micro_batch(payload: bytes) -> MicroBatch:
    return MicroBatch(1, len(payload) // 4, payload, b"", b"", b"", b"", 1)


def fanout(ranks: int, payload: int, steps: int) -> float:
    """Seconds for `steps` published steps of one `payload`-byte micro-batch per rank (after a warm-up)."""
    cfg = TransportConfig(base_port=free_base_port(), host="127.0.0.1", publish_grace_ms=0)
    grids = [[[micro_batch(os.urandom(payload))] for _ in range(ranks)]]
    subs = [MicroBatchSubscriber(cfg, rank) for rank in range(ranks)]
    pub = MicroBatchPublisher(cfg, ranks)
    try:
        pub.publish(0, grids[0])  # warm-up: READY barrier, buffers allocated and touched
        for sub in subs:
            sub.receive()

        def receiver(sub: MicroBatchSubscriber) -> Callable[[], None]:
            def run() -> None:
                for _ in range(steps):
                    (batch,) = sub.receive()
                    assert len(batch.input_ids) == payload

            return run

        def sender() -> None:
            for step in range(1, steps + 1):
                pub.publish(step, grids[0])

        return run_threads(sender, [receiver(sub) for sub in subs])
    finally:
        pub.close()
        for sub in subs:
            sub.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (noisier)")
    args = parser.parse_args()
    budget = 256 * MIB if args.quick else 1024 * MIB  # payload bytes moved per measurement
    print("| ranks | payload/rank | raw TCP GB/s | fan-out GB/s | fan-out / raw |")
    print("|---|---|---|---|---|")
    for ranks in (2, 4):
        for mib in (1, 8, 64):
            payload = mib * MIB
            steps = max(3, budget // (payload * ranks))
            raw = ranks * payload * steps / raw_tcp(ranks, payload, steps) / 1e9
            fan = ranks * payload * steps / fanout(ranks, payload, steps) / 1e9
            print(f"| {ranks} | {mib} MiB | {raw:.2f} | {fan:.2f} | {fan / raw:.0%} |", flush=True)
    print()
    print("| ranks | tiny step (1 micro-batch of 64 B per rank) | raw TCP us/step | fan-out us/step |")
    print("|---|---|---|---|")
    for ranks in (2, 4):
        steps = 300 if args.quick else 2000
        raw_us = raw_tcp(ranks, 64, steps) / steps * 1e6
        fan_us = fanout(ranks, 64, steps) / steps * 1e6
        print(f"| {ranks} | 64 B | {raw_us:.0f} | {fan_us:.0f} |", flush=True)


if __name__ == "__main__":
    main()
