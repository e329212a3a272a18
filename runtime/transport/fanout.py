"""ZeroMQ fan-out of per-rank micro-batches from the trainer master (rank 0) to every data rank.

One XPUB socket is bound on 0.0.0.0:<basePort+1>; rank r SUBscribes to the topic b"data_rank|<r>|" (the
trailing "|" stops rank 1 from also matching rank 10) and receives multipart messages
[topic, ascii step, msgpack([list[MicroBatch], slots]), *payloads]. Right after subscribing, each rank PUSHes
its rank id to a PULL socket bound on 0.0.0.0:<basePort+2> (READY). Ranks connect to `transport.host`, or
$MASTER_ADDR when that is unset or 0.0.0.0; "localhost" is only the last resort when neither is set.

Why XPUB rather than PUB: with XPUB_NODROP a full subscriber queue makes the send fail with EAGAIN (we wait,
bounded) instead of silently dropping the message, and XPUB hands us every subscription, so the first publish
waits until each rank's subscription has really reached the publisher. READY alone does not prove that (it
travels on another connection), so step 0 cannot be lost to the slow-joiner race even with publishGraceMs = 0.

Every message carries its step and a rank refuses any other step than the one it expects: a lost message is
a loud crash, never training on misaligned data.

Large payloads are never copied in our code: a `bytes` field (or an mm_kwargs tensor's data) of at least
OUT_OF_BAND_BYTES travels as its own frame, sent zero-copy from the micro-batch's own immutable bytes, and
the msgpack header carries the field empty plus a slot (micro-batch index, field) saying where the frame
goes. Encoding them inline instead cost one memcpy of every payload per step on the master, measured at
~20% of the fan-out's throughput at 4 MiB per rank (bench/bench_fanout.py). On the rank, inline fields
decode as memoryviews into the header frame and out-of-band ones become the payload frames' own buffers:
no copy either way (this rank owns the frames, so the views are writable: torch.frombuffer works without a
warning).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import zmq
from zmq.utils.monitor import recv_monitor_message

from rlrun import pod_contract
from rlrun.runtime.config import TransportConfig
from rlrun.runtime.wire import EncodedTensor, MicroBatch

logger = logging.getLogger(__name__)

BIND_HOST = "0.0.0.0"
LAST_RESORT_HOST = "localhost"
_SEND_RETRY_SECONDS = 0.001
OUT_OF_BAND_BYTES = 256 * 1024
"""A payload this large goes as its own zero-copy frame. Below it, copying it into the header costs less
than the bookkeeping pyzmq does for each zero-copy frame (and pyzmq copies frames under 64 KiB anyway)."""
_BYTES_FIELDS = tuple(f.name for f in msgspec.structs.fields(MicroBatch) if f.type is bytes)
_MM_SLOT = "mm_kwargs/"
"""Slot prefix of an mm_kwargs tensor's data: `mm_kwargs/<key>`; any other slot names a MicroBatch field."""


def data_port(cfg: TransportConfig) -> int:
    return cfg.base_port + 1


def ready_port(cfg: TransportConfig) -> int:
    return cfg.base_port + 2


def topic(rank: int) -> bytes:
    return b"data_rank|%d|" % rank


def connect_host(cfg: TransportConfig, environ: Mapping[str, str] | None = None) -> str:
    """The host ranks connect to: `cfg.host`, else $MASTER_ADDR, else (documented last resort) localhost."""
    if cfg.host and cfg.host != BIND_HOST:
        return cfg.host
    env = os.environ if environ is None else environ
    return env.get(pod_contract.MASTER_ADDR_ENV) or LAST_RESORT_HOST


def tcp_endpoint(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def check_grid(per_rank: Sequence[Sequence[MicroBatch]], world_size: int) -> None:
    """Every rank must get a list and all lists the same length: ranks run the same number of collectives."""
    if len(per_rank) != world_size:
        raise ValueError(f"Micro-batch grid has {len(per_rank)} rank lists, expected world_size={world_size}")
    lengths = [len(batches) for batches in per_rank]
    if len(set(lengths)) > 1:
        raise ValueError(
            f"Micro-batch lists differ in length across ranks: {lengths}; pad with zero-loss dummies"
        )


def _viewed(cls: type[msgspec.Struct], **overrides: Any) -> type[msgspec.Struct]:
    """A subclass of `cls` whose `bytes` fields decode as memoryviews into the received frame (no copy).

    Instances still pass `isinstance(x, cls)`; fields keep their positions, so the wire format is unchanged.
    """
    fields: list[tuple[str, Any, Any] | tuple[str, Any]] = []
    for field in msgspec.structs.fields(cls):
        kind = overrides.get(field.name, memoryview if field.type is bytes else None)
        if kind is None:
            continue
        has_default = field.default is not msgspec.NODEFAULT
        fields.append((field.name, kind, field.default) if has_default else (field.name, kind))
    return msgspec.defstruct(f"{cls.__name__}View", fields, bases=(cls,), array_like=True, gc=False)


_EncodedTensorView = _viewed(EncodedTensor)
_MicroBatchView = _viewed(MicroBatch, mm_kwargs=dict[str, _EncodedTensorView] | None)  # type: ignore[valid-type]
_Header = tuple[list[_MicroBatchView], list[tuple[int, str]]]  # type: ignore[valid-type]


def _immutable(value: bytes) -> bytes:
    """Zero-copy frames are read by ZMQ after publish returns: only an immutable `bytes` may be lent."""
    return value if type(value) is bytes else bytes(value)


def split_payloads(
    batches: Sequence[MicroBatch],
) -> tuple[list[MicroBatch], list[tuple[int, str]], list[bytes]]:
    """(header micro-batches with large payloads emptied, their slots, the payloads in slot order)."""
    shells: list[MicroBatch] = []
    slots: list[tuple[int, str]] = []
    payloads: list[bytes] = []
    for index, batch in enumerate(batches):
        changes: dict[str, Any] = {}
        for name in _BYTES_FIELDS:
            value = getattr(batch, name)
            if len(value) >= OUT_OF_BAND_BYTES:
                changes[name] = b""
                slots.append((index, name))
                payloads.append(_immutable(value))
        if batch.mm_kwargs:
            tensors = dict(batch.mm_kwargs)
            for key, tensor in batch.mm_kwargs.items():
                if len(tensor.data) >= OUT_OF_BAND_BYTES:
                    tensors[key] = msgspec.structs.replace(tensor, data=b"")
                    slots.append((index, _MM_SLOT + key))
                    payloads.append(_immutable(tensor.data))
                    changes["mm_kwargs"] = tensors
        shells.append(msgspec.structs.replace(batch, **changes) if changes else batch)
    return shells, slots, payloads


def join_payloads(
    batches: list[MicroBatch], slots: list[tuple[int, str]], payloads: Sequence[memoryview]
) -> None:
    """Put each out-of-band payload back into the field its slot names (the inverse of split_payloads)."""
    if len(slots) != len(payloads):
        raise ValueError(f"{len(slots)} payload slots but {len(payloads)} payload frames")
    for (index, field), payload in zip(slots, payloads, strict=True):
        if not 0 <= index < len(batches):
            raise ValueError(f"payload slot names micro-batch {index} of {len(batches)}")
        batch = batches[index]
        if field.startswith(_MM_SLOT):
            key = field.removeprefix(_MM_SLOT)
            if not batch.mm_kwargs or key not in batch.mm_kwargs:
                raise ValueError(f"payload slot names mm_kwargs[{key!r}], which micro-batch {index} lacks")
            batch.mm_kwargs[key].data = payload
        elif field in _BYTES_FIELDS:
            setattr(batch, field, payload)
        else:
            raise ValueError(f"payload slot names unknown field {field!r}")


def _close(*sockets: zmq.Socket | None) -> None:
    for sock in sockets:
        if sock is not None and not sock.closed:
            sock.close(linger=0)


class MicroBatchPublisher:
    """Rank 0's end: binds the data and READY sockets, publishes one step's per-rank lists at a time."""

    def __init__(self, cfg: TransportConfig, world_size: int) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        self._cfg = cfg
        self._world_size = world_size
        self._ctx = zmq.Context()
        self._pub = self._ctx.socket(zmq.XPUB)
        self._pub.setsockopt(zmq.SNDHWM, cfg.hwm)
        self._pub.setsockopt(zmq.XPUB_NODROP, 1)
        self._ready = self._ctx.socket(zmq.PULL)
        self._ready.setsockopt(zmq.RCVHWM, cfg.hwm)
        try:
            self._bind(self._pub, data_port(cfg), "data")
            self._bind(self._ready, ready_port(cfg), "READY")
        except BaseException:
            self.close()
            raise
        self._encoder = msgspec.msgpack.Encoder()
        self._next_step: int | None = None

    @staticmethod
    def _bind(sock: zmq.Socket, port: int, what: str) -> None:
        try:
            sock.bind(tcp_endpoint(BIND_HOST, port))
        except zmq.ZMQError as exc:
            raise OSError(
                f"Cannot bind the ZMQ micro-batch {what} socket on {BIND_HOST}:{port}: {exc}; "
                "choose another transport.basePort (data uses basePort+1, READY basePort+2)"
            ) from exc

    def publish(self, step: int, per_rank: Sequence[Sequence[MicroBatch]]) -> None:
        """Send each rank its list for `step`; the first call first waits for every rank (READY + grace)."""
        check_grid(per_rank, self._world_size)
        if self._next_step is None:
            self._wait_for_ranks()
        elif step != self._next_step:
            raise ValueError(
                f"Publishing micro-batch step {step}, expected {self._next_step}: steps are consecutive"
            )
        deadline = time.monotonic() + self._cfg.receive_timeout_seconds
        for rank, batches in enumerate(per_rank):
            self._send(rank, step, batches, deadline)
        self._next_step = step + 1

    def _send(self, rank: int, step: int, batches: Sequence[MicroBatch], deadline: float) -> None:
        shells, slots, payloads = split_payloads(batches)
        frames = [topic(rank), b"%d" % step, self._encoder.encode((shells, slots)), *payloads]
        while True:
            try:  # the payload frames lend ZMQ the micro-batches' own bytes, kept alive until sent
                self._pub.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:  # XPUB_NODROP: this rank's queue is at the high-water mark
                if time.monotonic() >= deadline:
                    raise self._stalled(rank, step) from None
                time.sleep(_SEND_RETRY_SECONDS)

    def _stalled(self, rank: int, step: int) -> TimeoutError:
        return TimeoutError(
            f"data_rank={rank} took no micro-batches for {self._cfg.receive_timeout_seconds:g}s "
            f"while publishing step {step} (its queue is full at transport.hwm={self._cfg.hwm}); "
            "is that rank alive?"
        )

    def _wait_for_ranks(self) -> None:
        """Wait until every rank sent READY and its subscription reached us, then sleep the grace once."""
        ready: set[int] = set()
        subscribed: set[int] = set()
        topics = {topic(rank): rank for rank in range(self._world_size)}
        poller = zmq.Poller()
        poller.register(self._ready, zmq.POLLIN)
        poller.register(self._pub, zmq.POLLIN)
        timeout = self._cfg.ready_timeout_seconds
        deadline = time.monotonic() + timeout
        while len(ready) < self._world_size or len(subscribed) < self._world_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(set(range(self._world_size)) - (ready & subscribed))
                raise TimeoutError(
                    f"Timed out waiting for ZMQ micro-batch READY messages from ranks {missing} "
                    f"after {timeout:g}s (publisher bound on {BIND_HOST} ports {data_port(self._cfg)} and "
                    f"{ready_port(self._cfg)}; ranks connect to transport.host or $MASTER_ADDR)"
                )
            events = dict(poller.poll(remaining * 1000))
            if self._ready in events:
                message = self._ready.recv()
                if message.isdigit() and int(message) < self._world_size:
                    ready.add(int(message))
            if self._pub in events:
                message = self._pub.recv()
                if message[:1] == b"\x01" and message[1:] in topics:
                    subscribed.add(topics[message[1:]])
        time.sleep(self._cfg.publish_grace_ms / 1000)

    def close(self) -> None:
        _close(self._pub, self._ready)
        if not self._ctx.closed:
            self._ctx.term()

    def __enter__(self) -> MicroBatchPublisher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class MicroBatchSubscriber:
    """A data rank's end: subscribes to its topic, announces READY, receives consecutive steps."""

    def __init__(
        self,
        cfg: TransportConfig,
        rank: int,
        start_step: int = 0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._cfg = cfg
        self.rank = rank
        self.next_step = start_step
        self.host = connect_host(cfg, environ)
        self.endpoint = tcp_endpoint(self.host, data_port(cfg))
        self._timeout_ms = int(cfg.receive_timeout_seconds * 1000)
        self.last_bytes = 0  # size of the last step's message (the trainer's fan-out throughput metric)
        self._decoder = msgspec.msgpack.Decoder(_Header)
        self._ctx = zmq.Context()
        self._connected = False
        self._disconnected_at: float | None = None
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, cfg.hwm)
        self._sub.setsockopt(zmq.RCVTIMEO, self._timeout_ms)
        self._monitor = self._sub.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self._push = self._ctx.socket(zmq.PUSH)
        try:
            for sock in (self._sub, self._push):
                sock.setsockopt(zmq.IPV6, ":" in self.host)
            self._sub.connect(self.endpoint)
            self._sub.setsockopt(zmq.SUBSCRIBE, topic(rank))
            self._push.connect(tcp_endpoint(self.host, ready_port(cfg)))
            self._push.send(b"%d" % rank, zmq.NOBLOCK)  # queued until the connection is up
        except zmq.ZMQError as exc:
            self.close()
            raise OSError(
                f"Cannot connect data_rank={rank} to the trainer master at {self.endpoint}: {exc}"
            ) from exc

    def wait(self) -> None:
        """Block until this rank's next message is here, at most transport.receiveTimeoutSeconds."""
        if not self._sub.poll(self._timeout_ms, zmq.POLLIN):
            raise self._timed_out()

    def receive(self) -> list[MicroBatch]:
        """The next step's micro-batches; their bytes fields are views into the received frame."""
        try:
            frames = self._sub.recv_multipart(copy=False)
        except zmq.Again:
            raise self._timed_out() from None
        if len(frames) < 3 or frames[0].bytes != topic(self.rank):
            raise ValueError(
                f"Malformed ZMQ micro-batch message for data_rank={self.rank}: {len(frames)} frames"
            )
        step = int(frames[1].bytes)
        if step != self.next_step:
            raise ValueError(
                f"Received ZMQ micro-batch for step {step}, expected {self.next_step} (data_rank={self.rank})"
            )
        buffers = [frame.buffer for frame in frames[2:]]
        batches, slots = self._decoder.decode(buffers[0])
        join_payloads(batches, slots, buffers[1:])
        self.last_bytes = sum(buffer.nbytes for buffer in buffers)
        self.next_step += 1
        return batches

    def check_connection(self) -> None:
        """Raise if the connection to the master has been down longer than the receive timeout.

        Called while waiting (without deadline) for the master to publish: a master that died shows up here
        as a lost TCP connection, whereas one that is merely waiting on the orchestrator keeps it open.
        """
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            self._connected = event == zmq.EVENT_CONNECTED
            self._disconnected_at = None if self._connected else time.monotonic()
        if self._disconnected_at is None:
            return
        down = time.monotonic() - self._disconnected_at
        if down > self._cfg.receive_timeout_seconds:
            raise ConnectionError(
                f"Lost the connection to the trainer master at {self.endpoint} {down:.0f}s ago "
                f"(data_rank={self.rank}); the master process died or the network to it is down"
            )

    def _timed_out(self) -> TimeoutError:
        return TimeoutError(
            f"Timed out waiting for ZMQ micro-batch for data_rank={self.rank} step={self.next_step} after "
            f"{self._cfg.receive_timeout_seconds:g}s from {self.endpoint}"
        )

    def close(self) -> None:
        if not self._sub.closed:
            self._sub.disable_monitor()
        _close(self._monitor, self._sub, self._push)
        if not self._ctx.closed:
            self._ctx.term()

    def __enter__(self) -> MicroBatchSubscriber:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
