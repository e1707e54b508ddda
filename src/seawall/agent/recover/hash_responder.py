"""Answering a sender's delta-sync HashRequests within a replication session (recovery side).

Rules and invariants:
- Every answer describes a volume's image at one durable seq, ``at_seq``. Any durable seq is
  a correct base: the recovery site's final image is state(at_seq) + every record after
  at_seq, in order, and the sender skips a block only when its current content equals
  state(at_seq) there. The newest durable seq when a view is opened is pinned (not the
  session's Welcome seq: a session lives for days, and a base that old would make every
  block written since then differ).
- One head view per volume (``Journal.head_view``), opened on the first request for that
  volume, on the event loop thread as the journal wants. While views are held, retention
  cannot apply past ``at_seq``. ``release`` lets them go once a SYNC_END (the sender's
  sync is complete) or a SYNC_BEGIN (a new window, maybe after one cut short: its
  digests must describe a seq at or after it, ``protect.syncer``) was appended and the
  answers in flight are out; ``close`` at session end. A later request opens new views
  at the then newest durable seq (the sender asks only once its SYNC_BEGIN is durable).
- Reading and hashing run in one worker thread per session, so appends go on in the event
  loop meanwhile and jobs run in request order; each answer is written only after the
  previous one, so Hashes leave in request order, as the protocol requires. The protocol
  bounds unanswered requests (``MAX_PENDING_HASH_REQUESTS``), hence what is held here.
- A request for an unknown volume or past a volume's end is the sender's fault:
  ``ProtocolViolation`` at once. A failed read is raised into the session loop by
  ``unless_failed``. Either way the session ends with an Error frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from seawall.errors import NotFound, ProtocolViolation
from seawall.journal.journal import Journal
from seawall.journal.view import PointInTimeView
from seawall.sync.digests import block_digests
from seawall.wire.aio import FrameWriter
from seawall.wire.frames import RecordsDirectory
from seawall.wire.protocol import Hashes, HashRequest, WireConnection
from seawall.wire.records import RecordKind

T = TypeVar("T")

_WINDOW_EDGES = (RecordKind.SYNC_BEGIN, RecordKind.SYNC_END)
READ_BYTES = 4 * 1024 * 1024
"""A request is read and hashed in pieces of this size (a multiple of any block size the
protocol allows), so a 64 MiB request never holds 64 MiB."""


class HashResponder:
    """Answers the HashRequests of one session; see the module docstring."""

    def __init__(self, journal: Journal, connection: WireConnection,
                 writer: FrameWriter) -> None:
        self._journal = journal
        self._connection = connection
        self._writer = writer
        self._views: dict[int, PointInTimeView] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seawall-hashes")
        self._last: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def answer(self, request: HashRequest) -> None:
        """Start answering ``request``; its Hashes frame is written when ready, in order."""
        view = self._view(request.volume)
        if request.offset + request.length > view.size_bytes:
            raise ProtocolViolation(
                f"hash request for [{request.offset}, +{request.length}) past the end of "
                f"volume {request.volume} ({view.size_bytes} bytes)"
            )
        task = asyncio.create_task(self._reply(request, view, self._last))
        self._pending.add(task)
        task.add_done_callback(self._done)
        self._last = task

    def pins(self, request: HashRequest) -> bool:
        """Whether answering ``request`` pins a new view (at the journal's durable seq, so
        the caller makes durable first what arrived before the request)."""
        return request.volume not in self._views

    def appended(self, directory: RecordsDirectory) -> None:
        """Note a frame appended to the journal: a SYNC_BEGIN or SYNC_END releases the views
        (a new window's digests must come from a seq at or after its SYNC_BEGIN)."""
        if self._views and any(h.kind in _WINDOW_EDGES for h in directory.headers):
            self.release()

    def release(self) -> None:
        """Let retention pass the pinned seqs again, once the answers in flight are out."""
        views = list(self._views.values())
        self._views = {}

        def close_views(_task: object = None) -> None:
            for view in views:
                view.close()

        if self._last is None or self._last.done():
            close_views()
        else:
            # The last answer waits for all earlier ones: when it is done, no job reads.
            self._last.add_done_callback(close_views)

    def close(self) -> None:
        """Session end: drop unanswered requests and release every view."""
        for task in self._pending:
            task.cancel()
        # A job already running finishes in its thread; its result is dropped.
        self._executor.shutdown(wait=False, cancel_futures=True)
        for view in self._views.values():
            view.close()
        self._views = {}

    async def unless_failed(self, step: Coroutine[Any, Any, T]) -> T:
        """Await ``step`` unless an answer fails first: then raise that answer's error."""
        if self._failure is not None:
            step.close()
            raise self._failure
        if not self._pending:
            return await step  # nothing in flight can fail meanwhile
        step_task = asyncio.ensure_future(step)
        waited: set[asyncio.Future[Any]] = {step_task, self._failed}
        try:
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not step_task.done():
                step_task.cancel()
        if self._failure is not None:
            raise self._failure
        return step_task.result()

    def _view(self, volume: int) -> PointInTimeView:
        view = self._views.get(volume)
        if view is None:
            try:
                self._journal.volume_size(volume)
            except NotFound:
                raise ProtocolViolation(
                    f"hash request for volume {volume}, which the group does not have"
                ) from None
            view = self._views[volume] = self._journal.head_view(
                volume, self._journal.durable_seq)
        return view

    async def _reply(self, request: HashRequest, view: PointInTimeView,
                     previous: asyncio.Task[None] | None) -> None:
        loop = asyncio.get_running_loop()
        digests = await loop.run_in_executor(self._executor, _digests, view, request)
        if previous is not None:
            await previous
        self._writer.write(self._connection.send(Hashes(
            request.volume, request.offset, request.length, request.block_bytes,
            view.checkpoint_seq, digests,
        )))
        await self._writer.drain()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if task.cancelled():
            return
        failure = task.exception()  # retrieved even when not the first: no asyncio warning
        if failure is not None and self._failure is None:
            self._failure = failure
            self._failed.set_result(None)


def _digests(view: PointInTimeView, request: HashRequest) -> bytes:
    """The digests ``request`` asks for, read from ``view`` (runs in the worker thread)."""
    end = request.offset + request.length
    return b"".join(
        block_digests(view.read(offset, min(READ_BYTES, end - offset)), request.block_bytes)
        for offset in range(request.offset, end, READ_BYTES)
    )
