"""The agent's side of a join, where it fails: nothing is kept, so it can be tried again.

The join that works, and the manager's refusals, run end to end in
``tests/e2e/test_agents_join.py``.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from seawall.agent.joining import _checked_answer, join_site, manager_address
from seawall.atomic import atomic_write_json
from seawall.cli.agents import site_config
from seawall.config import CONFIG_NAME, SiteConfig
from seawall.errors import Conflict, InvalidInput, PeerError
from seawall.join_tokens import certificate_pin, new_token, token_pin
from seawall.localsites import free_ports
from seawall.tls import ensure_identity


def cert(tmp_path: Path, name: str) -> str:
    return ensure_identity(tmp_path / name, name, str(uuid.uuid4())).cert_pem


def test_a_failed_join_leaves_the_directory_without_configuration(tmp_path: Path) -> None:
    manager_port, control_port = free_ports(2)  # no manager listens there
    directory = tmp_path / "host2"
    token = new_token(cert(tmp_path, "manager"))
    with pytest.raises(PeerError, match="cannot reach the site manager"):
        join_site(f"http://127.0.0.1:{manager_port}", token, directory, "host2",
                  f"127.0.0.1:{control_port}")
    assert directory.is_dir() and list(directory.iterdir()) == []  # no config, tls, staging


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"token": "swpt_pairing-token"}, InvalidInput, "not a join token"),
    ({"name": "bad name"}, InvalidInput, "invalid agent settings"),
    ({"control": "nowhere"}, InvalidInput, "expected HOST:PORT"),
    ({"manager_url": "ftp://x"}, InvalidInput, "--manager must be"),
    ({"control": "127.0.0.1:7010", "replication": "127.0.0.1:7010"}, InvalidInput,
     "need an address each"),
])
def test_bad_settings_are_refused_before_anything_is_made(
        tmp_path: Path, change: dict[str, str], error: type[Exception], message: str) -> None:
    directory = tmp_path / "host2"
    arguments = {"manager_url": "http://127.0.0.1:1", "name": "host2",
                 "token": new_token(cert(tmp_path, "manager")), "control": "127.0.0.1:7010",
                 "replication": "127.0.0.1:7011", **change}
    with pytest.raises(error, match=message):
        join_site(arguments["manager_url"], arguments["token"], directory, arguments["name"],
                  arguments["control"], replication=arguments["replication"])
    assert not directory.exists()


def test_a_directory_that_joined_takes_no_token(tmp_path: Path) -> None:
    directory = tmp_path / "host2"
    directory.mkdir()
    (directory / CONFIG_NAME).write_text("{}")
    with pytest.raises(Conflict, match="has joined a site already"):
        join_site("http://127.0.0.1:1", new_token(cert(tmp_path, "m")), directory, "host2",
                  "127.0.0.1:7010")
    assert (directory / CONFIG_NAME).read_text() == "{}"


def test_the_answer_must_carry_the_certificate_the_token_names(tmp_path: Path) -> None:
    manager, impostor = cert(tmp_path, "manager"), cert(tmp_path, "impostor")
    pin = token_pin(new_token(manager))
    assert pin == certificate_pin(manager)
    assert _checked_answer({"cert_pem": manager}, pin, "http://m", "host2") == manager
    with pytest.raises(PeerError, match="not the one the token names"):
        _checked_answer({"cert_pem": impostor}, pin, "http://m", "host2")
    with pytest.raises(PeerError, match="no valid certificate"):
        _checked_answer({}, pin, "http://m", "host2")


def test_manager_addresses() -> None:
    assert manager_address("https://10.0.0.1:7000") == ("10.0.0.1", 7000)
    assert manager_address("https://manager.example") == ("manager.example", 443)
    assert manager_address("http://[::1]:7000/") == ("::1", 7000)
    with pytest.raises(InvalidInput, match="plain http:// only to a loopback"):
        manager_address("http://10.0.0.1:7000")  # the token would cross in clear


def test_a_joined_directory_is_run_as_an_agent_not_as_a_site(tmp_path: Path) -> None:
    api, replication, peer_api = free_ports(3)
    site = SiteConfig.create("prod", tmp_path / "prod", f"127.0.0.1:{api}",
                             f"127.0.0.1:{replication}", peer_api=f"127.0.0.1:{peer_api}")
    assert site_config(site.data_dir) == site
    joined = site.with_overrides(agent_name="host2", agent_id=str(uuid.uuid4()))
    atomic_write_json(site.data_dir / CONFIG_NAME, joined.model_dump(mode="json"))
    with pytest.raises(InvalidInput, match="holds agent host2 of site prod, not a site"):
        site_config(site.data_dir)
    assert joined.identity().cert_pem == site.identity().cert_pem  # made once, kept
