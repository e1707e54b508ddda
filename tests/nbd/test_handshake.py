"""Every option path of the server handshake, driven byte by byte by the client core."""

from __future__ import annotations

import struct

import pytest
from nbd_peers import DISK_BYTES, RO_BYTES, Loopback, MemoryCatalog, drain_server, make_catalog

from seawall.errors import ProtocolViolation
from seawall.nbd import constants as c
from seawall.nbd.client import Negotiated, OptionReply, ServerGreeting
from seawall.nbd.events import (
    Disconnect,
    ExportInfo,
    ExportSelected,
    LocalProtocolError,
    SimpleReply,
)
from seawall.nbd.handshake import transmission_flags
from seawall.nbd.server import NbdServerConnection, ServerState

RW_FLAGS = (
    c.TFLAG_HAS_FLAGS
    | c.TFLAG_SEND_FLUSH
    | c.TFLAG_SEND_FUA
    | c.TFLAG_SEND_TRIM
    | c.TFLAG_SEND_WRITE_ZEROES
    | c.TFLAG_SEND_CACHE
    | c.TFLAG_CAN_MULTI_CONN
)
RO_FLAGS = (
    c.TFLAG_HAS_FLAGS
    | c.TFLAG_READ_ONLY
    | c.TFLAG_SEND_FLUSH
    | c.TFLAG_SEND_FUA
    | c.TFLAG_SEND_CACHE
    | c.TFLAG_CAN_MULTI_CONN
)


def option_replies(lb: Loopback) -> list[OptionReply]:
    return [e for e in lb.take_client_events() if isinstance(e, OptionReply)]


def test_greeting_is_fixed_newstyle_with_no_zeroes() -> None:
    server = NbdServerConnection(make_catalog())
    assert server.initial_bytes() == struct.pack(
        ">QQH", 0x4E42444D41474943, 0x49484156454F5054, 0b11
    )
    lb = Loopback()
    assert lb.client_events == [ServerGreeting(c.FLAG_FIXED_NEWSTYLE | c.FLAG_NO_ZEROES)]


def test_transmission_flags() -> None:
    catalog = make_catalog()
    assert transmission_flags(catalog.exports["disk"]) == RW_FLAGS
    assert transmission_flags(catalog.exports["ro"]) == RO_FLAGS


def test_go_with_block_size_request() -> None:
    lb = Loopback()
    lb.take_client_events()
    negotiated = lb.handshake("disk")
    assert negotiated == Negotiated("disk", DISK_BYTES, RW_FLAGS, 1, 4096, 32 * 1024 * 1024)
    assert lb.server_events == [ExportSelected(make_catalog().exports["disk"])]
    assert lb.server.state is ServerState.TRANSMISSION
    infos = [e for e in lb.client_events if isinstance(e, OptionReply)]
    assert [(e.option, e.reply_type) for e in infos] == [(c.OPT_GO, c.REP_INFO)] * 2
    assert infos[0].data == struct.pack(">HQH", c.INFO_EXPORT, DISK_BYTES, RW_FLAGS)
    assert infos[1].data == struct.pack(">HIII", c.INFO_BLOCK_SIZE, 1, 4096, 32 << 20)


def test_go_without_info_requests_sends_only_info_export() -> None:
    lb = Loopback()
    lb.to_server(lb.client.send_client_flags())
    lb.take_client_events()
    lb.to_server(lb.client.send_go("ro", ()))
    events = lb.take_client_events()
    assert [type(e) for e in events] == [OptionReply, Negotiated]
    first = events[0]
    assert isinstance(first, OptionReply)
    assert first.data == struct.pack(">HQH", c.INFO_EXPORT, RO_BYTES, RO_FLAGS)
    assert isinstance(events[1], Negotiated) and events[1].read_only


def test_info_name_and_description_then_go() -> None:
    lb = Loopback()
    lb.to_server(lb.client.send_client_flags())
    lb.take_client_events()
    lb.to_server(lb.client.send_info("ro", (c.INFO_NAME, c.INFO_DESCRIPTION, 77)))
    replies = option_replies(lb)
    assert [r.reply_type for r in replies] == [c.REP_INFO, c.REP_INFO, c.REP_INFO, c.REP_ACK]
    assert replies[1].data == struct.pack(">H", c.INFO_NAME) + b"ro"
    assert replies[2].data == struct.pack(">H", c.INFO_DESCRIPTION) + b"a read-only image"
    assert lb.server.state is ServerState.OPTIONS
    assert lb.server_events == []
    lb.to_server(lb.client.send_go("ro"))
    assert isinstance(lb.client_events[-1], Negotiated)


@pytest.mark.parametrize("option", [c.OPT_GO, c.OPT_INFO])
def test_unknown_export_with_info_or_go_is_err_unknown_and_negotiation_continues(
    option: int,
) -> None:
    lb = Loopback()
    lb.to_server(lb.client.send_client_flags())
    lb.take_client_events()
    if option == c.OPT_GO:
        lb.to_server(lb.client.send_go("nope"))
    else:
        lb.to_server(lb.client.send_info("nope"))
    (reply,) = option_replies(lb)
    assert reply.reply_type == c.REP_ERR_UNKNOWN
    assert b"nope" in reply.data
    lb.to_server(lb.client.send_go("disk"))
    assert isinstance(lb.client_events[-1], Negotiated)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x00\x00\x09disk\x00\x00",  # name length beyond the data
        b"\x00\x00\x00\x04disk\x00\x02\x00\x03",  # two info types announced, one sent
        b"\x00\x00\x00\x04disk\x00\x00\xff",  # trailing garbage
        b"\x00\x00\x00\x02\xff\xfe\x00\x00",  # not UTF-8
    ],
)
def test_malformed_go_is_err_invalid(data: bytes) -> None:
    lb = Loopback()
    lb.to_server(lb.client.send_client_flags())
    lb.take_client_events()
    lb.to_server(lb.client.send_option(c.OPT_GO, data))
    (reply,) = option_replies(lb)
    assert reply.reply_type == c.REP_ERR_INVALID
    assert lb.server.state is ServerState.OPTIONS


@pytest.mark.parametrize("no_zeroes", [True, False])
def test_export_name(no_zeroes: bool) -> None:
    lb = Loopback()
    lb.to_server(lb.client.send_client_flags(no_zeroes=no_zeroes))
    lb.take_client_events()
    before = len(lb.raw_to_client)
    lb.to_server(lb.client.send_export_name("disk"))
    reply = bytes(lb.raw_to_client[before:])
    assert reply[:10] == struct.pack(">QH", DISK_BYTES, RW_FLAGS)
    assert reply[10:] == (b"" if no_zeroes else bytes(124))
    assert lb.take_client_events() == [Negotiated("disk", DISK_BYTES, RW_FLAGS)]
    assert isinstance(lb.server_events[-1], ExportSelected)


def test_export_name_of_unknown_export_terminates() -> None:
    lb = Loopback()
    lb.to_server(lb.client.send_client_flags())
    lb.to_server(lb.client.send_export_name("nope"))
    violation = lb.server_events[-1]
    assert isinstance(violation, ProtocolViolation)
    assert lb.server.state is ServerState.CLOSED
    lb.to_server(b"anything more is ignored")
    assert drain_server(lb.server) == [violation]  # raised again; nothing else parsed
    assert len(lb.server._rx.data) == 0


def test_list() -> None:
    lb = Loopback()
    lb.to_server(lb.client.send_client_flags())
    lb.take_client_events()
    lb.to_server(lb.client.send_list())
    replies = option_replies(lb)
    assert [r.reply_type for r in replies] == [c.REP_SERVER, c.REP_SERVER, c.REP_ACK]
    assert replies[0].data == b"\x00\x00\x00\x04disk"
    assert replies[1].data == b"\x00\x00\x00\x02ro"
    lb.to_server(lb.client.send_option(c.OPT_LIST, b"junk"))
    assert [r.reply_type for r in option_replies(lb)] == [c.REP_ERR_INVALID]


def test_abort() -> None:
    lb = Loopback()
    lb.to_server(lb.client.send_client_flags())
    lb.take_client_events()
    lb.to_server(lb.client.send_abort())
    assert [r.reply_type for r in option_replies(lb)] == [c.REP_ACK]
    assert lb.server_events == [Disconnect("NBD_OPT_ABORT")]
    assert lb.server.state is ServerState.CLOSED


@pytest.mark.parametrize(
    "option",
    [
        c.OPT_STRUCTURED_REPLY,
        c.OPT_SET_META_CONTEXT,
        c.OPT_LIST_META_CONTEXT,
        c.OPT_EXTENDED_HEADERS,
        c.OPT_STARTTLS,
        c.OPT_PEEK_EXPORT,
        12345,
    ],
)
def test_unsupported_options_are_refused_and_parsing_continues(option: int) -> None:
    lb = Loopback()
    lb.to_server(lb.client.send_client_flags())
    lb.take_client_events()
    lb.to_server(lb.client.send_option(option, b"\x00\x00\x00\x00some option data"))
    (reply,) = option_replies(lb)
    assert (reply.option, reply.reply_type) == (option, c.REP_ERR_UNSUP)
    lb.to_server(lb.client.send_go("disk"))
    assert isinstance(lb.client_events[-1], Negotiated)


def test_qemu_style_negotiation() -> None:
    """QEMU tries extended headers, structured replies and meta contexts before GO."""
    lb = Loopback()
    lb.to_server(lb.client.send_client_flags())
    lb.take_client_events()
    for option in (c.OPT_EXTENDED_HEADERS, c.OPT_STRUCTURED_REPLY, c.OPT_SET_META_CONTEXT):
        lb.to_server(lb.client.send_option(option))
    assert [r.reply_type for r in option_replies(lb)] == [c.REP_ERR_UNSUP] * 3
    lb.to_server(lb.client.send_go("disk", (c.INFO_BLOCK_SIZE,)))
    assert isinstance(lb.client_events[-1], Negotiated)


def test_unknown_client_flags_drop_the_connection() -> None:
    server = NbdServerConnection(make_catalog())
    server.receive_data(struct.pack(">I", 0x4))
    with pytest.raises(ProtocolViolation, match="unknown client flags"):
        server.next_event()
    assert server.state is ServerState.CLOSED
    with pytest.raises(ProtocolViolation, match="unknown client flags"):
        server.next_event()  # again: a violation is not forgotten


def test_non_fixed_newstyle_client_may_only_use_export_name() -> None:
    lb = Loopback()
    lb.to_server(lb.client.send_client_flags(fixed_newstyle=False, no_zeroes=False))
    lb.to_server(lb.client.send_export_name("disk"))
    assert isinstance(lb.client_events[-1], Negotiated)

    lb = Loopback()
    lb.to_server(lb.client.send_client_flags(fixed_newstyle=False))
    lb.to_server(lb.client.send_list())
    assert isinstance(lb.server_events[-1], ProtocolViolation)


def test_bad_option_magic_and_oversized_option() -> None:
    for header in (
        struct.pack(">QII", 0x1234, c.OPT_LIST, 0),
        struct.pack(">QII", c.IHAVEOPT, c.OPT_GO, c.MAX_OPTION_BYTES + 1),
    ):
        server = NbdServerConnection(make_catalog())
        server.receive_data(struct.pack(">I", 3) + header)
        assert [type(e) for e in drain_server(server)] == [ProtocolViolation]


@pytest.mark.parametrize("tls_required", [False, True])
def test_a_4_gib_option_is_refused_too_big_from_its_header_never_buffered(
        tls_required: bool) -> None:
    server = NbdServerConnection(make_catalog(), tls_required)
    server.receive_data(struct.pack(">I", c.CLIENT_FLAG_FIXED_NEWSTYLE))
    server.receive_data(struct.pack(">QII", c.IHAVEOPT, c.OPT_GO, 0xFFFFFFFF))
    [violation] = drain_server(server)
    assert isinstance(violation, ProtocolViolation)
    reply = server.data_to_send()
    magic, option, reply_type, length = c.OPTION_REPLY_HEADER.unpack_from(reply)
    assert (magic, option, reply_type) == (c.OPTION_REPLY_MAGIC, c.OPT_GO, c.REP_ERR_TOO_BIG)
    assert reply[c.OPTION_REPLY_HEADER.size:] == b"option data is limited to 65536 bytes"
    assert length == len(reply) - c.OPTION_REPLY_HEADER.size
    # The option's data that follows is dropped as it comes, not kept for a later parse.
    for _ in range(64):
        server.receive_data(bytes(1 << 20))
    assert server.state is ServerState.CLOSED and drain_server(server) == [violation]
    assert len(server._rx.data) == 0  # the point is what the core keeps


def test_end_of_stream() -> None:
    server = NbdServerConnection(make_catalog())
    server.receive_data(struct.pack(">I", 3) + struct.pack(">QII", c.IHAVEOPT, 3, 0)[:5])
    server.receive_data(b"")
    assert [type(e) for e in drain_server(server)] == [ProtocolViolation]

    server = NbdServerConnection(make_catalog())
    server.receive_data(struct.pack(">I", 3))
    server.receive_data(b"")
    assert drain_server(server) == [Disconnect("end of stream")]


def test_send_before_export_selected_is_a_local_error() -> None:
    server = NbdServerConnection(make_catalog())
    with pytest.raises(LocalProtocolError):
        server.send(SimpleReply(1))


def test_export_info_validation() -> None:
    with pytest.raises(ValueError):
        ExportInfo("x", -1, read_only=False)
    with pytest.raises(ValueError):
        ExportInfo("x", 1, read_only=False, min_block_bytes=3)
    with pytest.raises(ValueError):
        ExportInfo("x", 1, read_only=False, preferred_block_bytes=3000)
    with pytest.raises(ValueError):
        ExportInfo("x", 1, read_only=False, min_block_bytes=512, max_block_bytes=1000)


def test_catalog_is_consulted_live() -> None:
    catalog = MemoryCatalog({})
    lb = Loopback(catalog)
    lb.to_server(lb.client.send_client_flags())
    catalog.exports["late"] = ExportInfo("late", 4096, read_only=False)
    lb.to_server(lb.client.send_go("late"))
    assert isinstance(lb.client_events[-1], Negotiated)
