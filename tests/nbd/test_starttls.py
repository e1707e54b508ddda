"""NBD_OPT_STARTTLS in the server core (proto.md's FORCEDTLS mode), driven byte by byte.

The TLS handshake itself is the shell's (``seawall.agent.frontend.server``, tested with real
clients in tests/interop/test_nbd_tls.py); here the "handshake" is ``tls_started()``.
"""

from __future__ import annotations

import struct

import pytest
from nbd_peers import Loopback, drain_server, make_catalog

from seawall.errors import ProtocolViolation
from seawall.nbd import constants as c
from seawall.nbd.client import Negotiated, OptionReply
from seawall.nbd.events import Disconnect, LocalProtocolError, StartTls
from seawall.nbd.server import NbdServerConnection, ServerState


def replies(lb: Loopback) -> list[tuple[int, int]]:
    return [(e.option, e.reply_type) for e in lb.take_client_events()
            if isinstance(e, OptionReply)]


def forced(chunk_bytes: int = 1) -> Loopback:
    lb = Loopback(chunk_bytes=chunk_bytes, tls_required=True)
    lb.to_server(lb.client.send_client_flags())
    lb.take_client_events()
    return lb


def start_tls(lb: Loopback) -> None:
    lb.to_server(lb.client.send_option(c.OPT_STARTTLS))
    assert replies(lb) == [(c.OPT_STARTTLS, c.REP_ACK)]
    assert lb.take_server_events() == [StartTls()]
    assert lb.server.state is ServerState.TLS_HANDSHAKE
    lb.server.tls_started()
    assert lb.server.tls


@pytest.mark.parametrize("option", [
    c.OPT_LIST, c.OPT_INFO, c.OPT_GO, c.OPT_STRUCTURED_REPLY, c.OPT_SET_META_CONTEXT,
    c.OPT_LIST_META_CONTEXT, c.OPT_EXTENDED_HEADERS, c.OPT_PEEK_EXPORT, 12345,
])
def test_every_option_but_starttls_and_abort_needs_tls_first(option: int) -> None:
    lb = forced()
    data = b"\x00\x00\x00\x04disk\x00\x00" if option in (c.OPT_INFO, c.OPT_GO) else b""
    lb.to_server(lb.client.send_option(option, data))
    assert replies(lb) == [(option, c.REP_ERR_TLS_REQD)]
    assert lb.take_server_events() == []
    assert lb.server.state is ServerState.OPTIONS
    # Negotiation goes on: STARTTLS, then the same option is served over TLS.
    start_tls(lb)
    lb.to_server(lb.client.send_go("disk"))
    assert isinstance(lb.client_events[-1], Negotiated)


def test_list_before_tls_names_no_export() -> None:
    lb = forced()
    lb.to_server(lb.client.send_list())
    events = lb.take_client_events()
    assert [(e.reply_type, e.data) for e in events if isinstance(e, OptionReply)] == [
        (c.REP_ERR_TLS_REQD, b"TLS is required: send NBD_OPT_STARTTLS")]
    assert b"disk" not in bytes(lb.raw_to_client)
    start_tls(lb)
    lb.to_server(lb.client.send_list())
    assert [r[1] for r in replies(lb)] == [c.REP_SERVER, c.REP_SERVER, c.REP_ACK]


def test_export_name_before_tls_ends_the_session() -> None:
    for fixed_newstyle in (True, False):
        lb = Loopback(tls_required=True)
        lb.to_server(lb.client.send_client_flags(fixed_newstyle=fixed_newstyle,
                                                 no_zeroes=False))
        lb.to_server(lb.client.send_export_name("disk"))
        assert [type(e) for e in lb.server_events] == [ProtocolViolation]
        assert lb.server.state is ServerState.CLOSED
        assert not any(isinstance(e, Negotiated) for e in lb.client_events)


def test_abort_before_tls_is_acknowledged() -> None:
    lb = forced()
    lb.to_server(lb.client.send_abort())
    assert replies(lb) == [(c.OPT_ABORT, c.REP_ACK)]
    assert lb.server_events == [Disconnect("NBD_OPT_ABORT")]


def test_write_after_go_over_tls_and_export_name_over_tls() -> None:
    lb = forced(chunk_bytes=3)
    start_tls(lb)
    lb.to_server(lb.client.send_go("disk"))
    assert isinstance(lb.client_events[-1], Negotiated)

    lb = forced()
    start_tls(lb)
    lb.to_server(lb.client.send_export_name("ro"))
    assert isinstance(lb.client_events[-1], Negotiated)
    assert lb.server.state is ServerState.TRANSMISSION


def test_second_starttls_is_invalid_and_starttls_with_data_is_invalid() -> None:
    lb = forced()
    lb.to_server(lb.client.send_option(c.OPT_STARTTLS, b"x"))
    assert replies(lb) == [(c.OPT_STARTTLS, c.REP_ERR_INVALID)]
    assert lb.server.state is ServerState.OPTIONS and not lb.server.tls
    start_tls(lb)
    lb.to_server(lb.client.send_option(c.OPT_STARTTLS))
    assert replies(lb) == [(c.OPT_STARTTLS, c.REP_ERR_INVALID)]
    assert lb.server.state is ServerState.OPTIONS


def test_bytes_pipelined_after_starttls_end_the_session() -> None:
    """Plaintext sent behind STARTTLS must not be taken as if it came over TLS."""
    server = NbdServerConnection(make_catalog(), tls_required=True)
    starttls = struct.pack(">QII", c.IHAVEOPT, c.OPT_STARTTLS, 0)
    go = struct.pack(">QII", c.IHAVEOPT, c.OPT_GO, 10) + b"\x00\x00\x00\x04disk\x00\x00"
    server.receive_data(struct.pack(">I", 3) + starttls + go)
    assert [type(e) for e in drain_server(server)] == [ProtocolViolation]
    assert server.state is ServerState.CLOSED
    assert server.data_to_send() == b""  # not even the ACK

    server = NbdServerConnection(make_catalog(), tls_required=True)
    server.receive_data(struct.pack(">I", 3) + starttls)
    assert drain_server(server) == [StartTls()]
    server.receive_data(go)  # clear text while the shell runs the handshake
    assert [type(e) for e in drain_server(server)] == [ProtocolViolation]
    with pytest.raises(LocalProtocolError):
        server.tls_started()


def test_without_tls_required_starttls_is_unsupported() -> None:
    lb = Loopback()
    lb.to_server(lb.client.send_client_flags())
    lb.take_client_events()
    lb.to_server(lb.client.send_option(c.OPT_STARTTLS))
    assert replies(lb) == [(c.OPT_STARTTLS, c.REP_ERR_UNSUP)]
    with pytest.raises(LocalProtocolError):
        lb.server.tls_started()
    lb.to_server(lb.client.send_go("disk"))
    assert isinstance(lb.client_events[-1], Negotiated)
