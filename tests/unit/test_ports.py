import random
import socket

from tests.support.ports import ephemeral_port_range, free_ports_outside_ephemeral_range


def test_ports_for_a_restarted_server_are_free_and_never_an_outgoing_connections_source_port():
    low, high = ephemeral_port_range()
    rng = random.Random(4)
    for _ in range(100):
        first = free_ports_outside_ephemeral_range(2, rng=rng)
        assert first + 1 < low or first > high, (first, low, high)
        for port in (first, first + 1):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))


def test_the_ephemeral_range_is_the_kernels():
    low, high = ephemeral_port_range()
    assert 1024 <= low < high <= 65535
