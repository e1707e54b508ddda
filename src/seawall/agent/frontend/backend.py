"""What the NBD front end serves: an export backend, and the catalog that names them.

Rules and invariants:
- A backend's ``read``/``write``/``write_zeroes``/``trim`` run synchronously in the event
  loop, except ``read`` of a backend with ``concurrent_reads = True`` (a read-only image
  whose reads may block on the disk), which runs in the front end's reader thread;
  ``flush`` is awaited and the data is durable when it returns.
- Every export kind implements this: file volumes, point-in-time views, scratch and
  live images; one contract suite runs against them all (tests/contract).
- A backend refuses what the NBD core refuses, with the same error, should a request get
  past it: a change to a read-only export raises EPERM (checked first); a range past the
  end (``check_range``) raises ENOSPC for WRITE and WRITE_ZEROES, EINVAL for READ and
  TRIM. Nothing is read or changed then (a file volume never grows).
"""

from __future__ import annotations

import errno
from typing import Protocol

from seawall.nbd.events import ExportInfo


def check_range(size_bytes: int, offset: int, length: int, past_end: int = errno.EINVAL) -> None:
    """Refuse ``[offset, +length)`` unless it lies within the export: ``past_end`` (ENOSPC
    for a write, as NBD says) when it runs past the end, EINVAL when it is negative."""
    if offset < 0 or length < 0:
        raise OSError(errno.EINVAL, f"negative range [{offset}, +{length})")
    if offset + length > size_bytes:
        raise OSError(past_end, f"range [{offset}, +{length}) past the end ({size_bytes} bytes)")


class ExportBackend(Protocol):
    info: ExportInfo

    def read(self, offset: int, length: int) -> bytes | bytearray: ...  # see the rules

    def write(self, offset: int, data: bytes | memoryview) -> None: ...  # into the page cache

    def write_zeroes(self, offset: int, length: int) -> None: ...

    def trim(self, offset: int, length: int) -> None: ...

    async def flush(self) -> None: ...  # durable when it returns


class BackendCatalog(Protocol):
    def backend(self, name: str) -> ExportBackend | None: ...

    def names(self) -> list[str]: ...
