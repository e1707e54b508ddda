"""Joining a site from another host: the first ``seawall agent run --manager URL --token T``.

Rules:
- Only a directory without ``site.json`` joins; a joined one runs as it is (its token is
  spent, and giving one again is refused: ``Conflict``).
- Everything given is checked before anything is made or sent: the name, the addresses,
  the token's form.
- The agent makes its own identity (EC P-256, ``seawall.tls``) in a staging directory
  inside DIR, and presents its certificate with the token, its name, a new agent id and
  its control URL (``POST /api/v1/agents/join``) over HTTPS, to a server presenting the
  certificate the token names (``seawall.join_tokens``: the token carries its PIN; pinned
  for the call, ``seawall.api_tls``), so the token goes to no one else and the answer (the
  manager's identity, pinned from then on) comes from that manager. To a manager in plain
  HTTP (``--insecure-http``, loopback only) the PIN names the manager's identity, and the
  answer is taken only if its certificate is that one.
- Only then is the identity moved to ``DIR/tls`` and ``DIR/site.json`` written (last,
  atomically): a refused join, a failed call or a wrong answer leaves no configuration,
  and the join can be tried again.
- The configuration (``SiteConfig``) holds the site's name and id, the manager's API
  address and certificate, and the agent's own name, id, listeners and settings.
  Replication listens, unless told, on the control host at the control port + 1.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from seawall.api_tls import certificate_of, pinned_context
from seawall.atomic import atomic_write_json, fsync_directory
from seawall.config import CONFIG_NAME, SiteConfig, is_loopback, parse_host_port
from seawall.errors import Conflict, InvalidInput, PeerError
from seawall.http import JsonClient
from seawall.join_tokens import certificate_pin, pin_fingerprint, token_pin
from seawall.tls import check_certificate, ensure_identity

JOIN_TIMEOUT_S = 30.0


def manager_address(url: str) -> tuple[str, int]:
    """(host, port) of a manager's API URL (``https://HOST:PORT``)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInput(f"--manager must be the site manager's URL (https://HOST:PORT), "
                           f"not {url!r}")
    if parsed.scheme == "http" and not is_loopback(parsed.host):
        raise InvalidInput(f"--manager {url}: plain http:// only to a loopback address (the "
                           "join token would cross the network in clear); use https://")
    return parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)


def join_site(manager_url: str, token: str, data_dir: Path, name: str, control: str,
              advertise_control: str | None = None, replication: str | None = None,
              nbd_tcp: str | None = None,
              settings: Mapping[str, object] | None = None,
              nbd_tcp_plain: bool = False) -> SiteConfig:
    """Join the site whose manager is at ``manager_url``; the new agent's configuration."""
    data_dir = data_dir.resolve()
    if (data_dir / CONFIG_NAME).exists():
        raise Conflict(f"{data_dir} has joined a site already: run `seawall agent run --data "
                       f"{data_dir}` without --manager/--token")
    if (data_dir / "tls").exists():
        raise InvalidInput(f"{data_dir} holds tls/ but no {CONFIG_NAME}: give an agent "
                           "directory of its own (empty, or new)")
    pin = token_pin(token)
    api_host, api_port = manager_address(manager_url)
    control_host, control_port = parse_host_port(control)
    advertised = parse_host_port(advertise_control) if advertise_control else None
    replication_host, replication_port = (parse_host_port(replication) if replication
                                          else (control_host, control_port + 1))
    nbd_address = parse_host_port(nbd_tcp) if nbd_tcp else None
    listeners = [(control_host, control_port), (replication_host, replication_port),
                 *([nbd_address] if nbd_address else [])]
    if len(set(listeners)) < len(listeners):
        raise InvalidInput("--control, --replication and --nbd-tcp need an address each")
    agent_id = str(uuid.uuid4())
    fields: dict[str, Any] = {
        "data_dir": data_dir, "api_host": api_host, "api_port": api_port,
        "agent_name": name, "agent_id": agent_id,
        "control_host": control_host, "control_port": control_port,
        "advertise_control_host": advertised[0] if advertised else None,
        "advertise_control_port": advertised[1] if advertised else None,
        "replication_host": replication_host, "replication_port": replication_port,
        "nbd_tcp_host": nbd_address[0] if nbd_address else None,
        "nbd_tcp_port": nbd_address[1] if nbd_address else None,
        "nbd_tcp_plain": nbd_tcp_plain,
        **(settings or {}),
    }
    # Checked now, with the agent's own name in the site's place: nothing made or sent yet.
    draft = _config({**fields, "name": name, "site_id": agent_id}, InvalidInput)
    assert draft.control_url is not None
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".join-", dir=data_dir))
    try:
        identity = ensure_identity(staging / "tls", name, agent_id)
        https = manager_url.startswith("https://")
        answer = _ask_to_join(manager_url, pin if https else None, {
            "token": token, "name": name, "agent_id": agent_id,
            "control_url": draft.control_url, "cert_pem": identity.cert_pem})
        manager_cert = _checked_answer(answer, None if https else pin, manager_url, name)
        config = _config({**fields, "name": answer["site"], "site_id": answer["site_id"],
                          "manager_cert_pem": manager_cert}, PeerError)
        for directory in (config.run_dir, config.agent_dir, config.volumes_dir,
                          config.journals_dir):
            directory.mkdir(parents=True, exist_ok=True)
        (staging / "tls").rename(config.tls_dir)
        fsync_directory(data_dir)
        config.ensure_nbd_tls()
        atomic_write_json(data_dir / CONFIG_NAME, config.model_dump(mode="json"), private=True)
        return config
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)


def _config(fields: dict[str, Any], error: type[InvalidInput] | type[PeerError]) -> SiteConfig:
    try:
        return SiteConfig.model_validate(fields)
    except ValueError as exc:
        raise error(f"invalid agent settings: {exc}") from None


def _ask_to_join(manager_url: str, pin: str | None, body: dict[str, Any]) -> dict[str, Any]:
    """POST the join to the manager; over HTTPS only to the holder of ``pin``'s certificate."""
    tls = None if pin is None else pinned_context(
        certificate_of(manager_url, pin_fingerprint(pin)))
    client = JsonClient(manager_url.rstrip("/"), timeout_s=JOIN_TIMEOUT_S,
                        what="the site manager", tls=tls)
    try:
        answer = client.post("/api/v1/agents/join", body)
    finally:
        client.close()
    if not isinstance(answer, dict):
        raise PeerError(f"the site manager at {manager_url} answered no join")
    return answer


def _checked_answer(answer: dict[str, Any], pin: str | None, manager_url: str,
                    name: str) -> str:
    """The manager's certificate from its answer (if ``pin``: only the one it names)."""
    cert_pem = str(answer.get("cert_pem", ""))
    try:
        check_certificate(cert_pem)
    except InvalidInput as exc:
        raise PeerError(f"the site manager's answer has no valid certificate: {exc}") from None
    if pin is not None and certificate_pin(cert_pem) != pin:
        raise PeerError(f"the manager at {manager_url} answered with a certificate that is "
                        "not the one the token names: not joined here (another server on "
                        "the way?). It may list this agent: `seawall agent remove "
                        f"{name}` there")
    return cert_pem
