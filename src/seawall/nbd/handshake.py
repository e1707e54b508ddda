"""Encoding and decoding of NBD handshake messages (pure helpers of the server core).

Rules:
- Every function here is total over its input bytes: malformed option data comes back
  as ``None`` (the caller answers NBD_REP_ERR_INVALID), never as an exception.
- Export names are UTF-8 strings of at most ``MAX_STRING_BYTES`` bytes (proto.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from seawall.nbd.constants import (
    EXPORT_NAME_PADDING,
    EXPORT_NAME_REPLY,
    INFO_BLOCK_SIZE,
    INFO_BLOCK_SIZE_STRUCT,
    INFO_DESCRIPTION,
    INFO_EXPORT,
    INFO_EXPORT_STRUCT,
    INFO_NAME,
    MAX_STRING_BYTES,
    OPTION_REPLY_HEADER,
    OPTION_REPLY_MAGIC,
    REP_INFO,
    TFLAG_CAN_MULTI_CONN,
    TFLAG_HAS_FLAGS,
    TFLAG_READ_ONLY,
    TFLAG_SEND_CACHE,
    TFLAG_SEND_FLUSH,
    TFLAG_SEND_FUA,
    TFLAG_SEND_TRIM,
    TFLAG_SEND_WRITE_ZEROES,
    U16,
    U32,
)
from seawall.nbd.events import ExportInfo


def transmission_flags(info: ExportInfo) -> int:
    """The transmission flags we advertise for ``info``.

    CAN_MULTI_CONN is safe for every export because the shell applies each write to the
    one backing store synchronously before replying, and flush covers the whole store.
    """
    flags = (
        TFLAG_HAS_FLAGS
        | TFLAG_SEND_FLUSH
        | TFLAG_SEND_FUA
        | TFLAG_SEND_CACHE
        | TFLAG_CAN_MULTI_CONN
    )
    if info.read_only:
        flags |= TFLAG_READ_ONLY
    else:
        flags |= TFLAG_SEND_WRITE_ZEROES | (TFLAG_SEND_TRIM if info.can_trim else 0)
    return flags


def option_reply(option: int, reply_type: int, payload: bytes = b"") -> bytes:
    return OPTION_REPLY_HEADER.pack(OPTION_REPLY_MAGIC, option, reply_type, len(payload)) + payload


def decode_name(raw: bytes) -> str | None:
    if len(raw) > MAX_STRING_BYTES or b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def export_name_reply(info: ExportInfo, no_zeroes: bool) -> bytes:
    reply = EXPORT_NAME_REPLY.pack(info.size_bytes, transmission_flags(info))
    return reply if no_zeroes else reply + EXPORT_NAME_PADDING


def server_entry(name: str) -> bytes:
    """Payload of one NBD_REP_SERVER reply."""
    raw = name.encode("utf-8")
    return U32.pack(len(raw)) + raw


@dataclass(frozen=True, slots=True)
class InfoRequest:
    """The decoded data of NBD_OPT_INFO / NBD_OPT_GO."""

    name: str
    info_types: tuple[int, ...]


def decode_info_request(data: bytes) -> InfoRequest | None:
    """``u32 name length, name, u16 count, count x u16 info type``; None if malformed."""
    if len(data) < 6:
        return None
    (name_length,) = U32.unpack_from(data, 0)
    if 4 + name_length + 2 > len(data):
        return None
    name = decode_name(data[4 : 4 + name_length])
    if name is None:
        return None
    (count,) = U16.unpack_from(data, 4 + name_length)
    types_at = 4 + name_length + 2
    if types_at + 2 * count != len(data):
        return None
    info_types = tuple(U16.unpack_from(data, types_at + 2 * i)[0] for i in range(count))
    return InfoRequest(name, info_types)


def info_replies(option: int, info: ExportInfo, requested: tuple[int, ...]) -> bytes:
    """NBD_REP_INFO replies for an INFO/GO: always INFO_EXPORT, the rest only if asked.

    Block sizes are sent only on request: a client that did not ask may not be prepared
    to honour them, and QEMU always asks.
    """
    parts = [
        option_reply(
            option,
            REP_INFO,
            INFO_EXPORT_STRUCT.pack(INFO_EXPORT, info.size_bytes, transmission_flags(info)),
        )
    ]
    for info_type in dict.fromkeys(requested):
        if info_type == INFO_NAME:
            parts.append(option_reply(option, REP_INFO, U16.pack(INFO_NAME) + info.name.encode()))
        elif info_type == INFO_DESCRIPTION and info.description:
            payload = U16.pack(INFO_DESCRIPTION) + info.description.encode()[:MAX_STRING_BYTES]
            parts.append(option_reply(option, REP_INFO, payload))
        elif info_type == INFO_BLOCK_SIZE:
            payload = INFO_BLOCK_SIZE_STRUCT.pack(
                INFO_BLOCK_SIZE,
                info.min_block_bytes,
                info.preferred_block_bytes,
                info.max_block_bytes,
            )
            parts.append(option_reply(option, REP_INFO, payload))
    return b"".join(parts)
