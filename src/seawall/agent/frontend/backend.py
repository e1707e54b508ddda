"""What the NBD front end serves: an export backend, and the catalog that names them.

Rules and invariants:
- A backend's ``read``/``write``/``write_zeroes``/``trim`` run synchronously in the event
  loop, except ``read`` of a backend with ``concurrent_reads = True`` (a read-only image
  whose reads may block on the disk), which runs in the front end's reader thread;
  ``flush`` is awaited and the data is durable when it returns.
- Every export kind implements this: file volumes, point-in-time views, scratch and
  live images.
"""

from __future__ import annotations

from typing import Protocol

from seawall.nbd.events import ExportInfo


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
