"""A live failover in a real agent: NBD clients, a replication listener, a restart.

The images must survive a clean agent stop with everything written to them, the group must
refuse its source's sessions while failed over, and a rollback must leave the journal and
replicas as they were and take sessions again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from journal.journal_model import make_stream
from seawall.agent.service import Agent
from seawall.config import SiteConfig
from seawall.contract.agent import GroupVolume, RecoverySpec
from seawall.localsites import free_ports
from seawall.nbd.blocking import NbdClient
from seawall.tls import client_context
from seawall.wire.aio import read_event
from seawall.wire.protocol import Error, Event, Hello, Role, VolumeSpec, Welcome, WireConnection
from support.tls_peers import PROD

VOLUME_SIZES = {0: 64 * 1024, 7: 50_001}
SPEC = RecoverySpec(group_id="g-1", name="app", source_site="prod", source_cert_pem=PROD.cert_pem,
                    volumes=[GroupVolume(index=v, name=f"disk{v}", size_bytes=n)
                             for v, n in VOLUME_SIZES.items()])
HELLO = Hello("g-1", "prod", tuple(VolumeSpec(v, f"disk{v}", n)
                                   for v, n in VOLUME_SIZES.items()))


async def hello(agent: Agent) -> Event:
    """What the agent answers the group's source site when it connects."""
    context = client_context(PROD, agent.identity.cert_pem)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", agent.config.replication_port, ssl=context)
    connection = WireConnection(Role.SENDER)
    try:
        writer.write(connection.send(HELLO))
        return await read_event(connection, reader, 65536)
    finally:
        writer.close()


def write_through_nbd(uri: str, model: bytearray, seed: int) -> None:
    """Writes and zeroes, a flush, then more writes never flushed (a clean stop keeps them)."""
    with NbdClient(uri) as client:
        for number in range(12):
            offset = (seed * 7919 + number * 4099) % (len(model) - 5000)
            data = bytes([seed, number]) * 2000 if number % 4 else bytes(3000)
            if number % 4:
                client.write(offset, data)
            else:
                client.write_zeroes(offset, len(data))
            model[offset:offset + len(data)] = data
            if number == 8:
                client.flush()
        assert client.read(0, len(model)) == model


def read_through_nbd(uri: str, size_bytes: int) -> bytes:
    with NbdClient(uri) as client:
        return client.read(0, size_bytes)


def test_live_images_survive_an_agent_restart_and_roll_back_cleanly(tmp_path: Path) -> None:
    stream = make_stream(3, record_count=300, volume_sizes=VOLUME_SIZES)
    checkpoint = stream.consistent()[-2]
    api_port, replication_port = free_ports(2)
    config = SiteConfig.create("dr", tmp_path / "s", f"127.0.0.1:{api_port}",
                               f"127.0.0.1:{replication_port}")
    replicas = config.journals_dir / "g-1" / "replicas"
    replicas.mkdir(parents=True)
    for volume, data in stream.replicas.items():  # disk7's replica is not zeros
        (replicas / f"disk{volume}.raw").write_bytes(data)
    models = {f"disk{v}": bytearray(image) for v, image in checkpoint.images.items()}

    async def scenario() -> None:
        agent = Agent(config)
        await agent.start()
        agent.recover(SPEC)
        journal = agent.recovering["g-1"].journal
        for frame, directory in stream.frames:  # as the receiver appends them
            journal.append_frame(frame, directory)
        journal.sync()
        before = (journal.durable_seq, journal.checkpoints())
        replica_bytes = {p.name: p.read_bytes() for p in replicas.iterdir()}
        assert await hello(agent) == Welcome(before[0])

        live = await agent.live.start("op-1", "g-1", str(checkpoint.seq))
        uris = {image["name"]: image["uri"] for image in live["images"]}
        assert set(uris) == set(models) and live["state"] == "running"
        for number, (name, uri) in enumerate(sorted(uris.items())):
            await asyncio.to_thread(write_through_nbd, uri, models[name], number + 1)
        refused = await hello(agent)
        assert isinstance(refused, Error) and refused.code == "failed_over", refused
        await agent.stop()

        agent = Agent(SiteConfig.load(tmp_path / "s"))  # a new process on the same data
        await agent.start()
        try:
            assert set(agent.names()) == set(models)
            for name, uri in uris.items():
                image = await asyncio.to_thread(read_through_nbd, uri, len(models[name]))
                assert image == models[name], name
            refused = await hello(agent)
            assert isinstance(refused, Error) and refused.code == "failed_over", refused

            rolled = await agent.live.rollback("op-1")
            assert rolled["state"] == "rolled-back" and agent.names() == []
            journal = agent.recovering["g-1"].journal
            assert (journal.durable_seq, journal.checkpoints()) == before
            assert {p.name: p.read_bytes() for p in replicas.iterdir()} == replica_bytes
            assert not (config.journals_dir / "g-1" / "live").exists()
            assert agent.state.recovering[0].live is None
            for volume, image in checkpoint.images.items():  # the journal never saw a write
                with journal.view(volume, checkpoint.seq) as view:
                    assert view.read(0, len(image)) == image
            assert await hello(agent) == Welcome(before[0])  # protection resumes
        finally:
            await agent.stop()

    asyncio.run(scenario())
