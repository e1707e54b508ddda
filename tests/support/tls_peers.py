"""TLS identities of paired test sites and a stranger, for agent tests on real sockets.

Replication runs over mutual TLS only, so a test that drives an agent's listener needs
what pairing gives: ``PROD`` (a protected site, which sends), ``DR`` (the recovery site,
which listens), ``OTHER`` (another site paired with ``DR``) and ``STRANGER`` (paired with
no one). They are made once per test process, in a directory removed at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import tempfile
import uuid
from pathlib import Path

from seawall.agent.recover.group import RecoveryGroup
from seawall.agent.recover.receiver import ReplicationServer
from seawall.tls import SiteIdentity, client_context, ensure_identity

_ROOT = Path(tempfile.mkdtemp(prefix="seawall-tls-"))
atexit.register(shutil.rmtree, _ROOT, True)


def make_identity(name: str) -> SiteIdentity:
    return ensure_identity(_ROOT / name, name, str(uuid.uuid4()))


PROD = make_identity("prod")
DR = make_identity("dr")
OTHER = make_identity("other")
STRANGER = make_identity("stranger")


def replication_server(groups: dict[str, RecoveryGroup]) -> ReplicationServer:
    """DR's listener for ``groups``, trusting their pinned source sites as its agent does."""
    server = ReplicationServer(groups.get, DR)
    for group in groups.values():
        if group.spec.source_cert_pem is not None:
            server.trust(group.spec.source_cert_pem)
    return server


async def connect(
    port: int, identity: SiteIdentity = PROD,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to DR's listener on ``port``, presenting ``identity``."""
    return await asyncio.open_connection("127.0.0.1", port,
                                         ssl=client_context(identity, DR.cert_pem))
