"""`rlrun local` picks its roles' ports (runtime/local.py free_port) where nothing else can take them before
the role binds: below the kernel's ephemeral range, which outgoing connections draw their local ports from,
and never twice in one launcher."""

import socket

from rlrun.runtime.local import _ephemeral_low, free_port


def test_ports_are_free_below_the_ephemeral_range_and_never_handed_out_twice():
    low = _ephemeral_low()
    blocks = [range(p, p + 3) for p in (free_port(span=3) for _ in range(40))]
    ports = [p for block in blocks for p in block]
    assert len(set(ports)) == len(ports), "a port was handed out twice"
    assert all(1024 <= p < low for p in ports), (low, sorted(ports)[-3:])
    for p in ports[:6]:  # still bindable by a role, on every address
        with socket.socket() as s:
            s.bind(("0.0.0.0", p))
