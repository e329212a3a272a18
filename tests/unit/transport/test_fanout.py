"""MicroBatchPublisher / MicroBatchSubscriber over real ZMQ sockets on loopback (connecting to 127.0.0.2)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from rlrun.runtime.config import TransportConfig
from rlrun.runtime.transport.fanout import (
    OUT_OF_BAND_BYTES,
    MicroBatchPublisher,
    MicroBatchSubscriber,
    check_grid,
    connect_host,
    join_payloads,
    split_payloads,
)
from rlrun.runtime.wire import EncodedTensor, MicroBatch, ints

MakeCfg = Callable[..., TransportConfig]
MakeMb = Callable[..., MicroBatch]


def first_id(mb: MicroBatch) -> int:
    return int(ints(mb.input_ids)[0])


def test_each_rank_gets_its_own_lists_in_step_order(make_cfg: MakeCfg, make_mb: MakeMb) -> None:
    # 11 ranks: rank 1's topic must not also match rank 10's messages.
    cfg, world = make_cfg(), 11
    subs = [MicroBatchSubscriber(cfg, rank) for rank in range(world)]
    try:
        with MicroBatchPublisher(cfg, world) as pub:
            for step in range(3):
                pub.publish(step, [[make_mb(r, step, 0), make_mb(r, step, 1)] for r in range(world)])
            for rank, sub in enumerate(subs):
                for step in range(3):
                    sub.wait()
                    got = sub.receive()
                    assert [first_id(mb) for mb in got] == [first_id(make_mb(rank, step, i)) for i in (0, 1)]
                assert sub.next_step == 3
    finally:
        for sub in subs:
            sub.close()


def test_received_bytes_fields_are_zero_copy_views(make_cfg: MakeCfg, make_mb: MakeMb) -> None:
    cfg = make_cfg()
    sent = make_mb(0, 0, seq_len=40_000)  # > ZMQ's copy threshold: really sent without copying
    with MicroBatchSubscriber(cfg, 0) as sub, MicroBatchPublisher(cfg, 1) as pub:
        pub.publish(0, [[sent]])
        (got,) = sub.receive()
    assert isinstance(got, MicroBatch)
    for name in ("input_ids", "attention_mask", "loss_mask", "advantages", "inference_logprobs"):
        view = getattr(got, name)
        assert isinstance(view, memoryview), name
        assert view == getattr(sent, name), name
    assert (got.rows, got.seq_len, got.num_samples) == (sent.rows, sent.seq_len, sent.num_samples)


def with_pixels(mb: MicroBatch, pixels: np.ndarray) -> MicroBatch:
    grid = EncodedTensor.from_array(np.array([[1, 2, 2]], np.int64))  # small: stays in the header
    mb.mm_kwargs = {"pixel_values": EncodedTensor.from_array(pixels), "image_grid_thw": grid}
    return mb


def test_large_payloads_are_lent_to_zmq_not_copied(make_mb: MakeMb) -> None:
    big = with_pixels(make_mb(0, 0, seq_len=OUT_OF_BAND_BYTES // 4, rows=1), np.ones((64, 1176), np.float32))
    small = make_mb(0, 0, index=1)
    shells, slots, payloads = split_payloads([small, big])
    assert slots == [
        (1, "input_ids"),
        (1, "advantages"),
        (1, "inference_logprobs"),
        (1, "mm_kwargs/pixel_values"),
    ]
    assert payloads[0] is big.input_ids and payloads[3] is big.mm_kwargs["pixel_values"].data
    assert (
        shells[0] is small and shells[1].input_ids == b"" and shells[1].attention_mask == big.attention_mask
    )
    assert big.input_ids and big.mm_kwargs["pixel_values"].data, "the caller's micro-batch must stay whole"


def test_large_and_small_payloads_arrive_whole_as_views(make_cfg: MakeCfg, make_mb: MakeMb) -> None:
    cfg = make_cfg()
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((256, 1176), dtype=np.float32)  # 1.2 MB: its own frame
    mutable = make_mb(0, 0, index=2, seq_len=OUT_OF_BAND_BYTES // 4, rows=1)
    mutable.input_ids = bytearray(mutable.input_ids)  # not immutable: must be copied before it is lent
    sent = [
        with_pixels(make_mb(0, 0, seq_len=OUT_OF_BAND_BYTES // 4, rows=1), pixels),
        make_mb(0, 0, index=1),
        mutable,
    ]
    expected = [bytes(mb.input_ids) for mb in sent]
    with MicroBatchSubscriber(cfg, 0) as sub, MicroBatchPublisher(cfg, 1) as pub:
        pub.publish(0, [sent])
        mutable.input_ids[:4] = b"\xff\xff\xff\xff"  # the caller reuses its buffer once publish returned
        got = sub.receive()
    assert [bytes(mb.input_ids) for mb in got] == expected
    for mb, want in zip(got, sent, strict=True):
        for name in ("attention_mask", "loss_mask", "advantages", "inference_logprobs"):
            assert isinstance(getattr(mb, name), memoryview) and getattr(mb, name) == getattr(want, name)
    np.testing.assert_array_equal(got[0].mm_kwargs["pixel_values"].to_array(), pixels)
    np.testing.assert_array_equal(got[0].mm_kwargs["image_grid_thw"].to_array(), [[1, 2, 2]])
    assert got[1].mm_kwargs is None
    assert sub.last_bytes > pixels.nbytes + 4 * OUT_OF_BAND_BYTES  # every frame counted


@pytest.mark.parametrize(
    ("slots", "frames", "message"),
    [
        ([(0, "input_ids")], 0, r"1 payload slots but 0 payload frames"),
        ([(3, "input_ids")], 1, r"names micro-batch 3 of 1"),
        ([(0, "rows")], 1, r"unknown field 'rows'"),
        ([(0, "mm_kwargs/pixel_values")], 1, r"mm_kwargs\['pixel_values'\], which micro-batch 0 lacks"),
    ],
)
def test_a_message_whose_slots_do_not_fit_is_refused(
    make_mb: MakeMb, slots: list[tuple[int, str]], frames: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        join_payloads([make_mb(0, 0)], slots, [memoryview(b"x")] * frames)


def test_step_mismatch_fails_loudly(make_cfg: MakeCfg, make_mb: MakeMb) -> None:
    cfg = make_cfg()
    with MicroBatchSubscriber(cfg, 0, start_step=6) as sub, MicroBatchPublisher(cfg, 1) as pub:
        pub.publish(5, [[make_mb(0, 5)]])
        with pytest.raises(ValueError, match=r"for step 5, expected 6 \(data_rank=0\)"):
            sub.receive()


def test_receive_times_out_without_a_publisher(make_cfg: MakeCfg) -> None:
    cfg = make_cfg(receive_timeout_seconds=1)
    with MicroBatchSubscriber(cfg, 3, start_step=2) as sub:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="micro-batch for data_rank=3 step=2"):
            sub.wait()
        with pytest.raises(TimeoutError, match=r"after 1s from tcp://127\.0\.0\.2:"):
            sub.receive()
        assert 1.9 <= time.monotonic() - started < 4


def test_ready_times_out_naming_the_missing_rank(make_cfg: MakeCfg, make_mb: MakeMb) -> None:
    cfg = make_cfg(ready_timeout_seconds=1)
    with MicroBatchSubscriber(cfg, 0), MicroBatchPublisher(cfg, 2) as pub:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"READY messages from ranks \[1\] after 1s"):
            pub.publish(0, [[make_mb(0, 0)], [make_mb(1, 0)]])
        assert time.monotonic() - started < 3


def test_slow_joiner_still_gets_step_0(make_cfg: MakeCfg, make_mb: MakeMb) -> None:
    cfg = make_cfg(publish_grace_ms=0)  # no grace: only the subscription barrier protects step 0
    with MicroBatchPublisher(cfg, 2) as pub:
        early = MicroBatchSubscriber(cfg, 0)
        publisher = threading.Thread(target=pub.publish, args=(0, [[make_mb(0, 0)], [make_mb(1, 0)]]))
        publisher.start()
        time.sleep(0.5)  # rank 1 joins long after the master started publishing
        with early, MicroBatchSubscriber(cfg, 1) as late:
            publisher.join(timeout=5)
            assert not publisher.is_alive()
            assert [first_id(mb) for mb in late.receive()] == [first_id(make_mb(1, 0))]
            assert [first_id(mb) for mb in early.receive()] == [first_id(make_mb(0, 0))]


@pytest.mark.parametrize(
    ("steps", "seq_len"),
    [
        (400, 2_000),  # ~56 KB: below ZMQ's copy threshold, so only XPUB_NODROP stops drops at the HWM
        (12, 1 << 19),  # ~14 MiB: zero-copy, so the per-rank buffer is reused only once ZMQ released it
    ],
)
def test_full_queues_block_the_master_instead_of_dropping(
    make_cfg: MakeCfg, make_mb: MakeMb, steps: int, seq_len: int
) -> None:
    # hwm=1 and ~22 MB+ queued: the master runs far ahead of a rank that is not reading yet. With a plain
    # PUB socket most steps would be dropped; here every step arrives, intact, in order.
    cfg = make_cfg(hwm=1)
    grids = [[[make_mb(0, step, seq_len=seq_len + step)]] for step in range(steps)]  # sizes vary: realloc
    with MicroBatchSubscriber(cfg, 0) as sub, MicroBatchPublisher(cfg, 1) as pub:
        publisher = threading.Thread(target=lambda: [pub.publish(s, grids[s]) for s in range(steps)])
        publisher.start()
        time.sleep(0.5)
        for step in range(steps):
            (got,) = sub.receive()
            assert got.input_ids == grids[step][0][0].input_ids, f"step {step} corrupted"
        publisher.join(timeout=5)
        assert not publisher.is_alive()


def test_master_gives_up_on_a_rank_that_stops_reading(make_cfg: MakeCfg, make_mb: MakeMb) -> None:
    cfg = make_cfg(hwm=1, receive_timeout_seconds=1)
    with MicroBatchSubscriber(cfg, 0), MicroBatchPublisher(cfg, 1) as pub:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"data_rank=0 took no micro-batches for 1s"):
            for step in range(64):
                pub.publish(step, [[make_mb(0, step, seq_len=1 << 19)]])
        assert time.monotonic() - started < 10


def test_steps_must_be_consecutive(make_cfg: MakeCfg, make_mb: MakeMb) -> None:
    cfg = make_cfg()
    with MicroBatchSubscriber(cfg, 0), MicroBatchPublisher(cfg, 1) as pub:
        pub.publish(3, [[make_mb(0, 3)]])
        with pytest.raises(ValueError, match="step 5, expected 4"):
            pub.publish(5, [[make_mb(0, 5)]])


def test_lost_master_connection_fails_within_the_receive_timeout(make_cfg: MakeCfg, make_mb: MakeMb) -> None:
    cfg = make_cfg(receive_timeout_seconds=1)
    with MicroBatchSubscriber(cfg, 0) as sub:
        with MicroBatchPublisher(cfg, 1) as pub:
            pub.publish(0, [[make_mb(0, 0)]])
            sub.receive()
            sub.check_connection()
        # the master's sockets are gone (as when its process dies); the rank's wait must not be endless
        started = time.monotonic()
        with pytest.raises(
            ConnectionError, match=r"Lost the connection to the trainer master at tcp://127\.0\.0\.2"
        ):
            while time.monotonic() - started < 5:
                sub.check_connection()
                time.sleep(0.05)
        assert 0.9 < time.monotonic() - started < 3


def test_bind_conflict_names_the_port(make_cfg: MakeCfg) -> None:
    cfg = make_cfg()
    with MicroBatchPublisher(cfg, 1), pytest.raises(OSError, match=rf"0\.0\.0\.0:{cfg.base_port + 1}"):
        MicroBatchPublisher(cfg, 1)


@pytest.mark.parametrize(
    ("per_rank", "message"),
    [
        ([[]], r"1 rank lists, expected world_size=2"),
        ([[1], [1, 2]], r"differ in length across ranks: \[1, 2\]"),
    ],
)
def test_grid_shape_is_checked(per_rank: list[list[MicroBatch]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_grid(per_rank, 2)


@pytest.mark.parametrize(
    ("host", "environ", "expected"),
    [
        ("10.1.2.3", {"MASTER_ADDR": "run-trainer-0.run-trainer"}, "10.1.2.3"),
        (None, {"MASTER_ADDR": "run-trainer-0.run-trainer"}, "run-trainer-0.run-trainer"),
        ("0.0.0.0", {"MASTER_ADDR": "127.0.0.2"}, "127.0.0.2"),
        (None, {}, "localhost"),
    ],
)
def test_connect_host(host: str | None, environ: dict[str, str], expected: str) -> None:
    assert connect_host(TransportConfig(host=host), environ) == expected


def test_decoded_arrays_match_what_was_sent(make_cfg: MakeCfg) -> None:
    cfg = make_cfg()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 150_000, size=(3, 7), dtype=np.int32)
    sent = MicroBatch(3, 7, ids.tobytes(), b"\x01" * 21, b"\x00" * 21, b"\x00" * 84, b"\x00" * 84, 3)
    with MicroBatchSubscriber(cfg, 0) as sub, MicroBatchPublisher(cfg, 1) as pub:
        pub.publish(0, [[sent]])
        (got,) = sub.receive()
    np.testing.assert_array_equal(ints(got.input_ids).reshape(3, 7), ids)


def test_an_unusable_master_address_is_named() -> None:
    with pytest.raises(
        OSError, match=r"Cannot connect data_rank=2 to the trainer master at tcp://bad host!:5556"
    ):
        MicroBatchSubscriber(TransportConfig(host="bad host!"), 2)
