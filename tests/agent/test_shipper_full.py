"""The protected side against a full recovery journal (a real tmpfs, needs root): real
``ProtectedGroup`` and ``Shipper`` sending through a ``FaultProxy`` (which counts the bytes)
to a real receiver.

After a refusal the sender probes with one record: when the recovery site has freed a
little space but not enough, an attempt sends that one record again, not the window of
records it refused; when space is back, everything is acknowledged and the checkpoint
taken after it reads back exactly as the volume holds it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.shipper import Shipper
from seawall.agent.protect.volumes import FileVolume, create_volume_file
from seawall.agent.recover.group import RecoveryGroup
from seawall.contract.agent import GroupVolume, ProtectionSpec, RecoverySpec
from seawall.localsites import free_port
from seawall.tls import client_context
from seawall.wan.site_throttle import SiteThrottle
from support.faultproxy import FaultProxy
from support.tls_peers import DR, PROD, replication_server
from support.tmpfs import fill, mounted_tmpfs

VOLUME_BYTES = 1 << 20
RECORD_BYTES = 64 * 1024
VOLUMES = [GroupVolume(index=0, name="disk0", size_bytes=VOLUME_BYTES)]


async def until(what: str, predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_after_a_refusal_an_attempt_resends_one_record_not_the_window(tmp_path: Path) -> None:
    create_volume_file(tmp_path / "disk0.raw", VOLUME_BYTES)
    volume = FileVolume("disk0", tmp_path / "disk0.raw")
    with mounted_tmpfs(tmp_path / "fs", 8 << 20) as root:
        recovery = RecoveryGroup(RecoverySpec(group_id="g-1", name="app", source_site="prod",
                                              source_cert_pem=PROD.cert_pem, volumes=VOLUMES),
                                 root / "g-1")
        port = free_port()

        async def scenario() -> None:
            server = replication_server({"g-1": recovery})
            await server.start("127.0.0.1", port)
            proxy = FaultProxy("127.0.0.1", port).start()
            spec = ProtectionSpec(group_id="g-1", name="app", volumes=VOLUMES,
                                  target_host="127.0.0.1", target_port=proxy.port,
                                  target_cert_pem=DR.cert_pem, codec="none",
                                  checkpoint_interval_s=3600)
            group = ProtectedGroup(spec, [volume], tmp_path / "state", 64 << 20)
            shipper = Shipper(group, "prod", SiteThrottle(None),
                              client_context(PROD, DR.cert_pem))
            group.start()
            shipper.start()
            try:
                stream = group.stream
                await until("protecting", lambda: group.protecting
                            and stream.acked_seq == stream.last_seq)
                crumb = root / "crumb"
                crumb.write_bytes(bytes(16 * 1024))
                fill(root / "filler", leave_bytes=0)
                rnd = random.Random(7)
                for _ in range(16):  # 1 MiB the recovery site has no room for
                    volume.write(rnd.randrange(0, VOLUME_BYTES - RECORD_BYTES, 4096),
                                 rnd.randbytes(RECORD_BYTES))
                await until("the refusal", lambda: group.state == "paused")
                assert group.refusal is not None and group.refusal[0] == "journal_full"
                sent_before = proxy.bytes_upstream
                assert not recovery.journal.has_room()
                crumb.unlink()  # some room, less than a record: the next session is welcomed
                assert recovery.journal.has_room()
                await until("a refused probe", lambda: not recovery.journal.has_room())
                resent_bytes = proxy.bytes_upstream - sent_before
                assert resent_bytes < 2 * RECORD_BYTES, resent_bytes  # not 1 MiB again

                (root / "filler").unlink()
                await until("everything acknowledged", lambda: group.refusal is None
                            and stream.acked_seq == stream.last_seq, timeout_s=60)
                entry = group.tag_checkpoint("after")
                await until("the checkpoint", lambda: stream.acked_seq >= entry.seq)
                with recovery.journal.view(0, entry.seq) as view:
                    assert view.read(0, VOLUME_BYTES) == volume.read(0, VOLUME_BYTES)
            finally:
                await shipper.stop()
                await group.stop()
                proxy.stop()
                await server.close()

        try:
            asyncio.run(scenario())
        finally:
            recovery.close()
            volume.close()
