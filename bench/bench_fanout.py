"""Micro-batch fan-out throughput and per-step overhead, next to a raw TCP loopback baseline (same run).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_fanout.py            # ~10 minutes
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_fanout.py --quick    # fewer steps, ~3 minutes

All three move the same bytes the same way: one sender thread (the master) and one receiver thread per
rank, each rank getting its own payload every step. Raw TCP = `sendall` of a prebuilt buffer over one
socket per rank, `recv_into` a preallocated buffer: the ceiling for loopback. Bare ZMQ = the same XPUB/SUB
sockets and topics as the fan-out, a prebuilt payload frame sent zero-copy and received zero-copy, and
nothing of ours (no encode, no send tracking, no step check, no decode): the ceiling for any fan-out built on
libzmq, which sets the part of the gap that lies outside our code. The fan-out = the real
MicroBatchPublisher / MicroBatchSubscriber: encode one MicroBatch (the payload as `input_ids`) into the reused
per-rank buffer, send zero-copy, receive, decode to views. Aggregate throughput = all ranks' payload bytes /
wall time from the first send to the last rank's receive (after one warm-up step). On 2 cores one figure
swings by +-30% from run to run, so each case runs `--repeat` times, interleaved, and the median is printed.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import threading
import time
from collections.abc import Callable

import zmq

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


def bare_zmq(ranks: int, payload: int, steps: int) -> float:
    """Seconds for `steps` steps over the fan-out's XPUB/SUB sockets with nothing of ours on the way."""
    cfg = TransportConfig(base_port=free_base_port(), host="127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{cfg.base_port + 1}"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, cfg.hwm)
    pub.setsockopt(zmq.XPUB_NODROP, 1)
    pub.bind(endpoint)
    contexts = [zmq.Context() for _ in range(ranks)]  # one per rank, as each rank is its own process
    subs = [context.socket(zmq.SUB) for context in contexts]
    for rank, sub in enumerate(subs):
        sub.setsockopt(zmq.RCVHWM, cfg.hwm)
        sub.connect(endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"data_rank|%d|" % rank)
    for _ in range(ranks):
        pub.recv()  # every subscription has reached the publisher
    frames = [[b"data_rank|%d|" % rank, b"0", os.urandom(payload)] for rank in range(ranks)]

    def receiver(sub: zmq.Socket) -> Callable[[], None]:
        def run() -> None:
            for _ in range(steps + 1):
                sub.recv_multipart(copy=False)

        return run

    def sender() -> None:
        for _ in range(steps + 1):
            for message in frames:
                pub.send_multipart(message, copy=False)

    try:  # one step more than timed, as raw_tcp
        return run_threads(sender, [receiver(sub) for sub in subs]) * steps / (steps + 1)
    finally:
        for sock in [pub, *subs]:
            sock.close(linger=0)
        for context in [ctx, *contexts]:
            context.term()


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


def gbps(ranks: int, payload: int, steps: int, seconds: float) -> float:
    return ranks * payload * steps / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (noisier)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per case; the median is printed")
    args = parser.parse_args()
    budget = 256 * MIB if args.quick else 1024 * MIB  # payload bytes moved per measurement
    print(f"median of {args.repeat} interleaved runs per case")
    print(
        "| ranks | payload/rank | raw TCP GB/s | bare ZMQ GB/s | fan-out GB/s | fan-out / raw | fan-out / bare ZMQ |"
    )
    print("|---|---|---|---|---|---|---|")
    for ranks in (2, 4):
        for mib in (1, 4, 16, 64):
            payload = mib * MIB
            steps = max(3, budget // (payload * ranks))
            runs: dict[str, list[float]] = {"raw": [], "bare": [], "fan": []}
            for _ in range(args.repeat):
                runs["raw"].append(gbps(ranks, payload, steps, raw_tcp(ranks, payload, steps)))
                runs["bare"].append(gbps(ranks, payload, steps, bare_zmq(ranks, payload, steps)))
                runs["fan"].append(gbps(ranks, payload, steps, fanout(ranks, payload, steps)))
            raw, bare, fan = (statistics.median(runs[k]) for k in ("raw", "bare", "fan"))
            print(
                f"| {ranks} | {mib} MiB | {raw:.2f} | {bare:.2f} | {fan:.2f} | {fan / raw:.0%} | {fan / bare:.0%} |",
                flush=True,
            )
    print()
    print(
        "| ranks | tiny step (1 micro-batch of 64 B per rank) | raw TCP us/step | bare ZMQ us/step | fan-out us/step |"
    )
    print("|---|---|---|---|---|")
    for ranks in (2, 4):
        steps = 300 if args.quick else 2000
        raw_us = statistics.median(raw_tcp(ranks, 64, steps) / steps * 1e6 for _ in range(args.repeat))
        bare_us = statistics.median(bare_zmq(ranks, 64, steps) / steps * 1e6 for _ in range(args.repeat))
        fan_us = statistics.median(fanout(ranks, 64, steps) / steps * 1e6 for _ in range(args.repeat))
        print(f"| {ranks} | 64 B | {raw_us:.0f} | {bare_us:.0f} | {fan_us:.0f} |", flush=True)


if __name__ == "__main__":
    main()
