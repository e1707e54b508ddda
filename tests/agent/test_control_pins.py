"""Who may call an agent's control listener: the manager's pin, extra pins, saved ones.

The listener itself (TLS handshakes, the member gate over HTTP) is driven for real in
``tests/e2e/test_agents_join.py``; here, the pins' rules and their file.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from seawall.agent.control.listener import PINS_FILE, ControlPins, member_may
from seawall.config import SiteConfig
from seawall.errors import CorruptData, InvalidInput
from seawall.localsites import free_ports
from seawall.tls import SiteIdentity, ensure_identity


def site(tmp_path: Path) -> SiteConfig:
    api, replication, peer_api = free_ports(3)
    return SiteConfig.create("prod", tmp_path / "prod", f"127.0.0.1:{api}",
                             f"127.0.0.1:{replication}", peer_api=f"127.0.0.1:{peer_api}")


def identity(tmp_path: Path, name: str) -> SiteIdentity:
    return ensure_identity(tmp_path / name, name, str(uuid.uuid4()))


def test_members_reach_health_and_coordination_only() -> None:
    assert member_may("/health") and member_may("/coordination/g1/prepare")
    for path in ("/volumes", "/control-pins", "/shutdown", "/coordination", "/healthz",
                 "/metrics", "/groups/g1/checkpoints"):
        assert not member_may(path), path


def test_extra_pins_are_replaced_whole_and_saved(tmp_path: Path) -> None:
    config = site(tmp_path)
    pins = ControlPins(config)
    manager = config.identity()
    assert pins.manager_pem == manager.cert_pem and pins.extra == []
    a, b = identity(tmp_path, "a"), identity(tmp_path, "b")
    described = pins.replace_extra([a.cert_pem, b.cert_pem, a.cert_pem, manager.cert_pem])
    assert described == {"manager": manager.fingerprint,
                         "extra": [a.fingerprint, b.fingerprint]}
    assert pins.tls.fingerprints == {manager.fingerprint, a.fingerprint, b.fingerprint}
    assert ControlPins(config).extra == [a.cert_pem, b.cert_pem]  # a restarted agent
    pins.replace_extra([b.cert_pem])
    assert pins.tls.fingerprints == {manager.fingerprint, b.fingerprint}
    assert ControlPins(config).describe()["extra"] == [b.fingerprint]


def test_a_bad_list_changes_nothing(tmp_path: Path) -> None:
    config = site(tmp_path)
    pins = ControlPins(config)
    a = identity(tmp_path, "a")
    pins.replace_extra([a.cert_pem])
    saved = (config.agent_dir / PINS_FILE).read_bytes()
    with pytest.raises(InvalidInput, match="not a PEM certificate"):
        pins.replace_extra([identity(tmp_path, "b").cert_pem, "garbage"])
    assert pins.extra == [a.cert_pem]
    assert (config.agent_dir / PINS_FILE).read_bytes() == saved


def test_a_joined_agent_pins_its_manager_and_a_damaged_file_is_named(tmp_path: Path) -> None:
    config = site(tmp_path)
    manager = identity(tmp_path, "manager")
    joined = config.with_overrides(manager_cert_pem=manager.cert_pem, agent_name="host2",
                                   agent_id=str(uuid.uuid4()))
    pins = ControlPins(joined)
    assert pins.describe()["manager"] == manager.fingerprint
    assert not pins.is_manager(None)
    (config.agent_dir / PINS_FILE).write_text("{not json")
    with pytest.raises(CorruptData, match=PINS_FILE):
        ControlPins(joined)
