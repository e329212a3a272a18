"""The active-replica rule over kopf peering status (pure), the same rule kopf pauses its handlers by."""

from datetime import UTC, datetime, timedelta

from rlrun.operator.peering import is_active, own_identity, random_priority

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def peer(priority: int, seen_ago: float = 1, lifetime: int = 10) -> dict:
    return {
        "priority": priority,
        "lifetime": lifetime,
        "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat(),
    }


def test_highest_live_priority_is_the_only_active_replica():
    peers = {"a": peer(5), "b": peer(9)}
    assert [is_active(peers, p, peers[p]["priority"], NOW) for p in ("a", "b")] == [False, True]


def test_a_dead_higher_peer_hands_over_and_a_missing_self_stands_by():
    peers = {"a": peer(5), "b": peer(9, seen_ago=11)}  # b's keep-alive expired: it was killed
    assert is_active(peers, "a", 5, NOW)
    assert not is_active({"b": peer(9)}, "a", 5, NOW)  # not announced yet: no writes


def test_equal_priorities_pause_both_so_replicas_draw_distinct_ones():
    peers = {"a": peer(7), "b": peer(7)}
    assert not is_active(peers, "a", 7, NOW) and not is_active(peers, "b", 7, NOW)
    assert len({random_priority() for _ in range(100)}) == 100
    assert own_identity() != own_identity()
