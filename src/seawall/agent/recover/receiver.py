"""The recovery side's replication listener: frames in, journal appends, durable ACKs out.

Rules and invariants:
- Sessions run over mutual TLS (``seawall.tls``). The handshake takes a client holding
  any certificate pinned for a group recovered here (``trust``, as groups are added);
  after HELLO the certificate must be the one pinned for *that* group, so a paired site
  cannot push into another site's group. A group without a pinned certificate (state
  from before pairing exchanged them) takes no session. Unpairing a site makes its
  manager have the trust rebuilt from the groups left (``trust_only``).
- A connection gets ``handshake_timeout_s`` (``HANDSHAKE_TIMEOUT_S``) for its TLS handshake,
  then as long again for its HELLO frame, or it is closed (a ``protocol_violation``
  ERROR after TLS): a client that connects and stalls holds nothing for long. An
  established session has no deadline: it may wait for writes as long as it likes.
- A session starts with HELLO naming a group this agent was told to recover (by its
  manager), from the site pinned for it; anything else is refused with an ERROR frame
  (``unknown_group``, ``unauthenticated``, ...) and the connection closed.
- HELLO announces the sender's members (``VolumeSpec``: index, name, size). Each must be
  one this agent holds for the group, a member or a retired volume, with the same name and
  size (``volume_mismatch`` otherwise). A change of members is made here first (a new
  volume's replica exists before any record of it comes), then at the sender, which then
  opens a new session announcing the new members; a sender still on the old members
  meanwhile is taken, since every volume it names is still held.
- WELCOME carries the journal's durable seq, after syncing whatever an earlier session
  appended, so the sender resumes exactly after what is on disk.
- Frames are appended as received; after each batch read from the socket the journal is
  fsynced once (group commit, in a worker thread) and only then ACKed. The socket is read
  through ``seawall.wire.aio.WireStream`` (TLS decrypts into its buffer, one copy into the
  connection's receive buffer, one out of it per frame), and the frame is checked once, by
  the ``WireConnection``: the journal does not hash its body again.
- A newer session for a group replaces the older one (the sender reconnected).
- A group failed over live (``RecoverySpec.live``) takes no session (``failed_over``).
- A full journal whose filesystem has freed no space since it filled (``Journal.has_room``)
  takes no session either (``journal_full`` before WELCOME): the sender would only send
  frames to be refused. Space freed by retention or by the operator lets the next one in.
- A corrupt frame ends the session with an ERROR; the sender resends from the last ACK.
- HASH_REQUESTs (delta sync) are answered from the image at a durable seq, hashed in a
  worker thread while appends go on (see ``seawall.agent.recover.hash_responder``); a
  request that pins a view first makes durable every frame that came before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

from seawall.agent.recover.group import RecoveryGroup
from seawall.agent.recover.hash_responder import HashResponder
from seawall.errors import JournalFull, ProtocolViolation, SeawallError
from seawall.tls import PinnedServerContext, SiteIdentity, is_pinned
from seawall.wire.aio import WireStream
from seawall.wire.protocol import (
    NEED_DATA,
    Ack,
    ConnectionClosed,
    Error,
    HashRequest,
    Hello,
    RecordsFrame,
    Role,
    Welcome,
    WireConnection,
)

log = logging.getLogger(__name__)

# Each, from the accept: the TLS handshake; then the HELLO frame (one round trip away).
HANDSHAKE_TIMEOUT_S = 10.0


class ReplicationServer:
    def __init__(self, lookup: Callable[[str], RecoveryGroup | None],
                 identity: SiteIdentity,
                 handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S) -> None:
        self._lookup = lookup
        self._handshake_timeout_s = handshake_timeout_s
        self._tls = PinnedServerContext(identity)
        self._server: asyncio.Server | None = None
        self._sessions: dict[str, asyncio.Task[None]] = {}

    def trust(self, cert_pem: str) -> None:
        """Let the holder of ``cert_pem`` (a group's source site) through the handshake.

        One context serves every connection, so new handshakes see the new certificate;
        trust grows as groups come, which lets through no one who could push into a group:
        that needs the certificate pinned for the group (``_refusal``).
        """
        self._tls.pin(cert_pem)

    def trust_only(self, certs: list[str]) -> None:
        """Pin exactly ``certs`` from now on (an unpaired site's no longer passes the handshake)."""
        self._tls.replace(certs)

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: WireStream(WireConnection(Role.RECEIVER), self._handle), host, port,
            ssl=self._tls.context, ssl_handshake_timeout=self._handshake_timeout_s)

    def end_session(self, group_id: str) -> None:
        """End the group's session, if one runs (its task releases the group's lock)."""
        task = self._sessions.get(group_id)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._sessions.values()):
            task.cancel()

    async def _handle(self, stream: WireStream) -> None:
        connection = stream.connection
        peer = stream.get_extra_info("peername")
        try:
            try:
                async with asyncio.timeout(self._handshake_timeout_s):
                    hello = await stream.next_event()
            except TimeoutError:
                raise ProtocolViolation(
                    f"no HELLO within {self._handshake_timeout_s:g} s of the TLS handshake"
                ) from None
            if not isinstance(hello, Hello):
                return
            group = self._lookup(hello.group_id)
            client = stream.get_extra_info("ssl_object")
            if await self._refused(self._refusal(hello, group, client), connection, stream):
                return
            assert group is not None
            previous = self._sessions.get(hello.group_id)
            if previous is not None:
                previous.cancel()
            current = asyncio.current_task()
            assert current is not None
            self._sessions[hello.group_id] = current
            async with group.lock:
                # Again: a live failover may have started while this session waited.
                if await self._refused(self._refusal(hello, group, client), connection, stream):
                    return
                if self._lookup(hello.group_id) is not group:  # closed meanwhile (members)
                    return
                await self._session(group, connection, stream)
        except asyncio.CancelledError:
            pass
        except (OSError, SeawallError) as exc:
            log.warning("replication session from %s ended: %s", peer, exc,
                        extra={"peer": str(peer)})
            if not stream.is_closing():
                with contextlib.suppress(SeawallError):  # the connection may be closed already
                    stream.write(connection.send(Error(getattr(exc, "code", "error"), str(exc))))
        finally:
            stream.close()

    @staticmethod
    async def _refused(refusal: Error | None, connection: WireConnection,
                       stream: WireStream) -> bool:
        """Send ``refusal`` if there is one (the caller then ends the session)."""
        if refusal is None:
            return False
        peer = stream.get_extra_info("peername")
        log.warning("replication session from %s refused: %s: %s", peer, refusal.code,
                    refusal.message, extra={"peer": str(peer)})
        stream.write(connection.send(refusal))
        await stream.drain()
        return True

    @staticmethod
    def _refusal(hello: Hello, group: RecoveryGroup | None,
                 client: ssl.SSLObject | None) -> Error | None:
        """Why a session for ``hello`` from ``client`` must not start here, if it must not."""
        if group is None:
            return Error("unknown_group", f"no recovery group {hello.group_id}")
        # Before anything about the group is said: only its source site may learn more.
        if not is_pinned(client, group.spec.source_cert_pem):
            return Error("unauthenticated", f"group {hello.group_id} takes replication only "
                                            "from the certificate pinned for its source site")
        if group.spec.live is not None:
            return Error("failed_over", f"group {group.spec.name} is failed over live at the "
                                        "recovery site: replication resumes after a rollback")
        known = {(v.index, v.name, v.size_bytes)
                 for v in [*group.spec.volumes, *group.spec.retired]}
        offered = {(v.index, v.name, v.size_bytes) for v in hello.volumes}
        if not offered or not offered <= known:
            return Error("volume_mismatch",
                         f"group {group.spec.name}: volumes {sorted(offered - known)} are not "
                         f"the recovery site's {sorted(known)}")
        if not group.journal.has_room():
            return Error(JournalFull.code, f"{group.journal.full_error} (no space was freed "
                                           "since: the session would be refused)")
        return None

    async def _session(
        self, group: RecoveryGroup, connection: WireConnection, stream: WireStream
    ) -> None:
        journal = group.journal
        await asyncio.to_thread(journal.sync)
        stream.write(connection.send(Welcome(journal.durable_seq)))
        hashes = HashResponder(journal, connection, stream)
        group.connected = True
        try:
            while True:
                await hashes.unless_failed(stream.received())
                appended = False
                while (event := connection.next_event()) is not NEED_DATA:
                    if isinstance(event, RecordsFrame):
                        journal.append_frame(event.frame, event.directory)
                        group.received_bytes += len(event.frame)
                        appended = True
                        hashes.appended(event.directory)
                    elif isinstance(event, HashRequest):
                        if appended and hashes.pins(event):  # at or after what came first
                            await asyncio.to_thread(journal.sync)
                        hashes.answer(event)
                    elif isinstance(event, ConnectionClosed | Error):
                        return
                if appended:
                    await asyncio.to_thread(journal.sync)
                    stream.write(connection.send(Ack(journal.durable_seq)))
                    await stream.drain()
        finally:
            hashes.close()
            group.connected = False
