"""Dropping connections: abort_transport works on every CPython 3.11 the project supports."""

import asyncio

from mailkit._net import abort_transport


class _Transport(asyncio.Transport):
    def __init__(self, detached: bool = False) -> None:
        super().__init__()
        self.detached = detached
        self.aborted = False
        self.closed = False

    def abort(self) -> None:
        if self.detached:  # what CPython < 3.11.5's SSL transport does after connection_lost
            raise AttributeError("'NoneType' object has no attribute '_abort'")
        self.aborted = True

    def close(self) -> None:
        self.closed = True


def test_abort_is_called_on_a_live_transport():
    transport = _Transport()
    abort_transport(transport)
    assert transport.aborted


def test_abort_of_an_already_detached_ssl_transport_is_not_an_error():
    transport = _Transport(detached=True)
    abort_transport(transport)
    assert not transport.aborted


def test_read_only_transport_is_closed_instead():
    class ReadOnly(asyncio.BaseTransport):
        closed = False

        def close(self) -> None:
            self.closed = True

    transport = ReadOnly()
    abort_transport(transport)
    assert transport.closed
