"""NBD wire constants and the named structs of every fixed-size message.

Source: NetworkBlockDevice/nbd ``doc/proto.md`` (fixed newstyle, simple replies only).

Rules:
- Everything is big-endian; every struct is a precompiled ``struct.Struct`` whose size
  is asserted here, so a typo in a format string fails at import time.
- Error numbers are the NBD ones (which happen to equal Linux errno values); map host
  ``OSError.errno`` values through ``nbd_errno_for`` rather than passing them through.

Pure code: no I/O.
"""

from __future__ import annotations

import errno as _errno
import struct
from typing import Final

# --- handshake -------------------------------------------------------------------------
NBDMAGIC: Final = 0x4E42444D41474943
IHAVEOPT: Final = 0x49484156454F5054
OPTION_REPLY_MAGIC: Final = 0x0003E889045565A9

# Handshake flags (server) and client flags.
FLAG_FIXED_NEWSTYLE: Final = 1 << 0
FLAG_NO_ZEROES: Final = 1 << 1
CLIENT_FLAG_FIXED_NEWSTYLE: Final = 1 << 0
CLIENT_FLAG_NO_ZEROES: Final = 1 << 1
KNOWN_CLIENT_FLAGS: Final = CLIENT_FLAG_FIXED_NEWSTYLE | CLIENT_FLAG_NO_ZEROES

# Options.
OPT_EXPORT_NAME: Final = 1
OPT_ABORT: Final = 2
OPT_LIST: Final = 3
OPT_PEEK_EXPORT: Final = 4
OPT_STARTTLS: Final = 5
OPT_INFO: Final = 6
OPT_GO: Final = 7
OPT_STRUCTURED_REPLY: Final = 8
OPT_LIST_META_CONTEXT: Final = 9
OPT_SET_META_CONTEXT: Final = 10
OPT_EXTENDED_HEADERS: Final = 11

# Option reply types.
REP_ACK: Final = 1
REP_SERVER: Final = 2
REP_INFO: Final = 3
REP_META_CONTEXT: Final = 4
REP_FLAG_ERROR: Final = 1 << 31
REP_ERR_UNSUP: Final = REP_FLAG_ERROR | 1
REP_ERR_POLICY: Final = REP_FLAG_ERROR | 2
REP_ERR_INVALID: Final = REP_FLAG_ERROR | 3
REP_ERR_PLATFORM: Final = REP_FLAG_ERROR | 4
REP_ERR_TLS_REQD: Final = REP_FLAG_ERROR | 5
REP_ERR_UNKNOWN: Final = REP_FLAG_ERROR | 6
REP_ERR_SHUTDOWN: Final = REP_FLAG_ERROR | 7
REP_ERR_BLOCK_SIZE_REQD: Final = REP_FLAG_ERROR | 8
REP_ERR_TOO_BIG: Final = REP_FLAG_ERROR | 9

# Information types (NBD_OPT_INFO / NBD_OPT_GO).
INFO_EXPORT: Final = 0
INFO_NAME: Final = 1
INFO_DESCRIPTION: Final = 2
INFO_BLOCK_SIZE: Final = 3

# Transmission flags.
TFLAG_HAS_FLAGS: Final = 1 << 0
TFLAG_READ_ONLY: Final = 1 << 1
TFLAG_SEND_FLUSH: Final = 1 << 2
TFLAG_SEND_FUA: Final = 1 << 3
TFLAG_ROTATIONAL: Final = 1 << 4
TFLAG_SEND_TRIM: Final = 1 << 5
TFLAG_SEND_WRITE_ZEROES: Final = 1 << 6
TFLAG_SEND_DF: Final = 1 << 7
TFLAG_CAN_MULTI_CONN: Final = 1 << 8
TFLAG_SEND_RESIZE: Final = 1 << 9
TFLAG_SEND_CACHE: Final = 1 << 10
TFLAG_SEND_FAST_ZERO: Final = 1 << 11

# --- transmission ----------------------------------------------------------------------
REQUEST_MAGIC: Final = 0x25609513
SIMPLE_REPLY_MAGIC: Final = 0x67446698

CMD_READ: Final = 0
CMD_WRITE: Final = 1
CMD_DISC: Final = 2
CMD_FLUSH: Final = 3
CMD_TRIM: Final = 4
CMD_CACHE: Final = 5
CMD_WRITE_ZEROES: Final = 6
CMD_BLOCK_STATUS: Final = 7

CMD_FLAG_FUA: Final = 1 << 0
CMD_FLAG_NO_HOLE: Final = 1 << 1
CMD_FLAG_DF: Final = 1 << 2
CMD_FLAG_REQ_ONE: Final = 1 << 3
CMD_FLAG_FAST_ZERO: Final = 1 << 4

# NBD error values (the only ones allowed on the wire).
EPERM: Final = 1
EIO: Final = 5
ENOMEM: Final = 12
EINVAL: Final = 22
ENOSPC: Final = 28
EOVERFLOW: Final = 75
ENOTSUP: Final = 95
ESHUTDOWN: Final = 108

# --- limits ----------------------------------------------------------------------------
# Largest READ/WRITE payload we accept (and advertise as the maximum block size).
MAX_PAYLOAD_BYTES: Final = 32 * 1024 * 1024
# Option data is bounded so that a hostile client cannot make us buffer unbounded
# memory during the handshake; every real option is far smaller (strings <= 4096).
MAX_OPTION_BYTES: Final = 64 * 1024
MAX_STRING_BYTES: Final = 4096

# --- structs ---------------------------------------------------------------------------
GREETING: Final = struct.Struct(">QQH")  # NBDMAGIC, IHAVEOPT, handshake flags
assert GREETING.size == 18
CLIENT_FLAGS: Final = struct.Struct(">I")
assert CLIENT_FLAGS.size == 4
OPTION_HEADER: Final = struct.Struct(">QII")  # IHAVEOPT, option, length
assert OPTION_HEADER.size == 16
OPTION_REPLY_HEADER: Final = struct.Struct(">QIII")  # magic, option, reply type, length
assert OPTION_REPLY_HEADER.size == 20
EXPORT_NAME_REPLY: Final = struct.Struct(">QH")  # size, transmission flags (+124 zeroes)
assert EXPORT_NAME_REPLY.size == 10
EXPORT_NAME_PADDING: Final = bytes(124)
INFO_EXPORT_STRUCT: Final = struct.Struct(">HQH")  # type, size, transmission flags
assert INFO_EXPORT_STRUCT.size == 12
INFO_BLOCK_SIZE_STRUCT: Final = struct.Struct(">HIII")  # type, minimum, preferred, maximum
assert INFO_BLOCK_SIZE_STRUCT.size == 14
U16: Final = struct.Struct(">H")
U32: Final = struct.Struct(">I")

REQUEST: Final = struct.Struct(">IHHQQI")  # magic, flags, type, cookie, offset, length
assert REQUEST.size == 28
SIMPLE_REPLY: Final = struct.Struct(">IIQ")  # magic, error, cookie
assert SIMPLE_REPLY.size == 16

_HOST_TO_NBD_ERRNO: Final[dict[int, int]] = {
    _errno.EPERM: EPERM,
    _errno.EACCES: EPERM,
    _errno.EROFS: EPERM,
    _errno.EIO: EIO,
    _errno.ENOMEM: ENOMEM,
    _errno.EINVAL: EINVAL,
    _errno.ENOSPC: ENOSPC,
    _errno.EDQUOT: ENOSPC,
    _errno.EFBIG: ENOSPC,
    _errno.EOVERFLOW: EOVERFLOW,
    _errno.ENOTSUP: ENOTSUP,
    _errno.EOPNOTSUPP: ENOTSUP,
    _errno.ESHUTDOWN: ESHUTDOWN,
}


def nbd_errno_for(host_errno: int | None) -> int:
    """The NBD error value for a host errno; anything unknown becomes EIO."""
    if host_errno is None:
        return EIO
    return _HOST_TO_NBD_ERRNO.get(host_errno, EIO)
