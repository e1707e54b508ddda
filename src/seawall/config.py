"""A site's configuration: one frozen object per process, read from ``DATA/site.json``.

Invariants: ``site init`` writes the file once (atomically), after the site's TLS identity
(``seawall.tls``); every path a process uses is derived here from the data directory, so
the manager, the agent and the CLI agree on them. An agent that joined a site from another
host (``seawall.agent.joining``) has a ``site.json`` of its own: the site's name and id,
its own ``agent_name``/``agent_id`` and identity, and its manager's certificate.
"""

from __future__ import annotations

import ipaddress
import json
import pwd
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from seawall.api_tls import leaf_pem, server_context
from seawall.atomic import atomic_write_json
from seawall.errors import Conflict, InvalidInput, NotFound
from seawall.hypervisor.base import parse_hypervisor_spec
from seawall.local_access import group_id, secure_data_dir
from seawall.nbd_certs import ensure_nbd_ca
from seawall.tls import SiteIdentity, ensure_identity
from seawall.wan.schedule import parse_schedule

CONFIG_NAME = "site.json"


def check_database_url(text: str) -> str:
    """A manager database URL, checked: SQLite (an absolute file path) or PostgreSQL.

    ``postgresql://`` is taken as ``postgresql+psycopg://`` (psycopg 3, the driver we ship).
    """
    from sqlalchemy.engine import make_url  # here: every CLI command loads this module
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(text)
    except ArgumentError:
        raise InvalidInput(f"not a database URL: {text!r} (expected e.g. "
                           "postgresql+psycopg://USER@HOST/DATABASE)") from None
    if url.drivername in ("postgresql", "postgresql+psycopg"):
        if not url.database:
            raise InvalidInput("the PostgreSQL URL names no database (…/DATABASE)")
        scheme = text.partition("://")[0]
        return f"postgresql+psycopg{text[len(scheme):]}"
    if url.drivername == "sqlite":
        if not url.database or not Path(url.database).is_absolute():
            raise InvalidInput("a SQLite database URL needs an absolute file path "
                               "(sqlite:////srv/site/manager.db)")
        return text
    raise InvalidInput(f"unsupported database {url.drivername!r}: use sqlite:////PATH or "
                       "postgresql+psycopg://USER@HOST/DATABASE")


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """Whether a listener bound to ``host`` is reachable from this host only: ``localhost``
    or a loopback address (127.0.0.0/8, ::1). A wildcard (0.0.0.0, ::) or any other name
    is not (a name is not resolved: it may change; so it counts as reachable)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


INSECURE_BEYOND_LOOPBACK = (
    "--insecure-http serves the API without TLS: only on a loopback --api address "
    "(127.0.0.1, ::1 or localhost), not {host}; API tokens and passwords would cross the "
    "network in clear text")


class SiteConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    site_id: str
    data_dir: Path
    api_host: str
    api_port: int
    replication_host: str
    replication_port: int
    nbd_tcp_host: str | None = None
    nbd_tcp_port: int | None = None
    nbd_tcp_plain: bool = False
    """NBD on TCP without TLS: only on a loopback address, only if asked (``--nbd-tcp-plain``).
    Otherwise NBD on TCP requires STARTTLS and a client certificate (``seawall.nbd_certs``)."""
    buffer_bytes: int = Field(default=512 << 20, ge=1 << 20)
    bitmap_bytes: int = Field(default=8 << 20, ge=64 << 10)
    """Memory bound of each protected volume's dirty map (see ``seawall.sync.dirtymap``)."""
    """The agent's memory budget for unsent writes, shared by its protected groups."""
    advertise_replication_host: str | None = None
    advertise_replication_port: int | None = None
    throttle_bytes_per_s: int | None = Field(default=None, gt=0)
    """Replication bandwidth of the whole site, shared by its groups; None is unlimited."""
    throttle_schedule: str | None = None
    """Rates by time of day over ``throttle_bytes_per_s`` (syntax: ``seawall.wan.schedule``)."""
    metrics_host: str | None = None
    metrics_port: int | None = Field(default=None, gt=0, lt=65536)
    """Where the agent serves Prometheus ``/metrics`` on TCP; None: no such listener."""

    peer_api_host: str | None = None
    peer_api_port: int | None = Field(default=None, gt=0, lt=65536)
    """Where the manager serves paired managers over mutual TLS; None: ``peer_api``'s default."""

    database: str | None = None
    """The manager's database URL (``check_database_url``); None: ``DATA/manager.db``."""

    control_host: str | None = None
    control_port: int | None = Field(default=None, gt=0, lt=65536)
    """Where the agent also serves its control API on TCP, over mutual TLS
    (``seawall.agent.control.listener``); None: on its Unix socket only."""
    advertise_control_host: str | None = None
    advertise_control_port: int | None = Field(default=None, gt=0, lt=65536)

    agent_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    agent_id: str | None = None
    """Set on an agent that joined the site from another host (``agent run --manager``):
    its own name and id, while ``name`` and ``site_id`` are the site's. None on the site's
    own agent, which goes by the site's name and id."""
    manager_cert_pem: str | None = None
    """A joined agent: its site manager's certificate, pinned at the join."""

    socket_group: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
    """The one group, besides the service's user, that may connect to the NBD socket (e.g.
    QEMU's); None: no one else (``seawall.local_access``)."""

    hypervisor: str = "none"
    """The agent's ``--hypervisor`` (``seawall.hypervisor.base.parse_hypervisor_spec``):
    ``none`` (volumes only), ``libvirt[:URI]`` or ``qmp:DIR``."""
    agent_deadline_s: float = Field(default=30.0, gt=0, le=3600)
    """How long the manager waits for its agent to answer a call (each step), before the
    caller is told the agent did not answer (``seawall.manager.clients``)."""
    api_tls_cert: Path | None = None
    api_tls_key: Path | None = None
    """The certificate (chain, PEM) and key the API serves (``--tls-cert/--tls-key``);
    None: the site's identity (``DATA/tls``). Read again on SIGHUP (``seawall.api_tls``)."""
    insecure_http: bool = False
    """The API in plain HTTP (``--insecure-http``): only on a loopback address."""

    vm_config_check_s: float = Field(default=30.0, gt=0, le=3600)
    """How often the agent compares each protected VM's definition with the last one
    captured (``seawall.agent.protect.vm_watch``), besides the hypervisor's events."""

    @model_validator(mode="after")
    def _check_nbd_tcp_plain(self) -> SiteConfig:
        if self.nbd_tcp_plain and not (self.nbd_tcp_host and is_loopback(self.nbd_tcp_host)):
            raise ValueError("NBD on TCP without TLS (--nbd-tcp-plain) needs a loopback "
                             "--nbd-tcp address (127.0.0.1, ::1 or localhost)")
        return self

    @model_validator(mode="after")
    def _check_api_tls(self) -> SiteConfig:
        if (self.api_tls_cert is None) != (self.api_tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.insecure_http:
            if self.api_tls_cert is not None:
                raise ValueError("--insecure-http serves no certificate: not with --tls-cert")
            if not is_loopback(self.api_host):
                raise ValueError(INSECURE_BEYOND_LOOPBACK.format(host=self.api_host))
        return self

    clone_dir: Path
    """Every clone is written inside it (``clone --to`` is relative to it); default
    ``DATA/clones`` (also for sites made before it)."""
    scripts_dir: Path
    """Recovery scripts run only from it (root's, 0700); default ``DATA/scripts``."""
    script_user: str | None = None
    """The user scripts run as when the agent runs as root; None: root (see README)."""
    storage_roots: tuple[Path, ...] = ()
    """Where groups may keep journals (``--storage``) and pre-seeded replicas
    (``--preseed``), besides the data directory."""

    @model_validator(mode="before")
    @classmethod
    def _default_directories(cls, values: Any) -> Any:
        if isinstance(values, dict) and "data_dir" in values:
            data_dir = Path(values["data_dir"])
            values = {"clone_dir": data_dir / "clones", "scripts_dir": data_dir / "scripts",
                      **{key: value for key, value in values.items() if value is not None}}
        return values

    @field_validator("database")
    @classmethod
    def _check_database(cls, text: str | None) -> str | None:
        return None if text is None else check_database_url(text)

    @field_validator("hypervisor")
    @classmethod
    def _check_hypervisor(cls, text: str) -> str:
        parse_hypervisor_spec(text)  # InvalidInput naming the accepted forms
        return text

    @field_validator("throttle_schedule")
    @classmethod
    def _check_schedule(cls, text: str | None) -> str | None:
        if text is not None:
            parse_schedule(text)  # InvalidInput, with a message naming the bad entry
        return text

    def with_overrides(self, **settings: object) -> SiteConfig:
        """This configuration with some settings replaced for one process (``agent run``)."""
        try:
            return type(self).model_validate({**self.model_dump(), **settings})
        except ValueError as exc:
            raise InvalidInput(f"invalid site settings: {exc}") from None

    @property
    def advertised_replication(self) -> tuple[str, int]:
        """Where peers should connect for replication (differs behind NAT or a proxy)."""
        if self.advertise_replication_host and self.advertise_replication_port:
            return self.advertise_replication_host, self.advertise_replication_port
        return self.replication_host, self.replication_port

    @property
    def api_url(self) -> str:
        """The API's URL: ``https://`` unless ``insecure_http`` (loopback only)."""
        host = f"[{self.api_host}]" if ":" in self.api_host else self.api_host
        return f"{'http' if self.insecure_http else 'https'}://{host}:{self.api_port}"

    def api_tls_files(self) -> tuple[Path, Path]:
        """(certificate, key) the API serves: the operator's, else the site's identity."""
        if self.api_tls_cert is not None and self.api_tls_key is not None:
            return self.api_tls_cert, self.api_tls_key
        identity = self.identity()
        return identity.cert_path, identity.key_path

    @property
    def peer_api(self) -> tuple[str, int]:
        """The peer API's address: as given at ``site init``, else the API's port + 2."""
        if self.peer_api_host and self.peer_api_port:
            return self.peer_api_host, self.peer_api_port
        return self.api_host, self.api_port + 2

    @property
    def peer_api_url(self) -> str:
        host, port = self.peer_api
        return f"https://{host}:{port}"

    @property
    def control_url(self) -> str | None:
        """Where other hosts reach the agent's control API (mutual TLS); None: not on TCP."""
        if self.advertise_control_host and self.advertise_control_port:
            host, port = self.advertise_control_host, self.advertise_control_port
        elif self.control_host and self.control_port:
            host, port = self.control_host, self.control_port
        else:
            return None
        return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"

    def nbd_tcp_uri(self, export: str) -> str | None:
        """The URI of ``export`` on the NBD TCP listener (``nbds://`` with TLS); None: none."""
        if not (self.nbd_tcp_host and self.nbd_tcp_port):
            return None
        host = f"[{self.nbd_tcp_host}]" if ":" in self.nbd_tcp_host else self.nbd_tcp_host
        scheme = "nbd" if self.nbd_tcp_plain else "nbds"
        return f"{scheme}://{host}:{self.nbd_tcp_port}/{export}"

    @property
    def nbd_tls_dir(self) -> Path:
        """The NBD CA and server certificate of this agent (``seawall.nbd_certs``)."""
        return self.data_dir / "nbd-tls"

    def ensure_nbd_tls(self) -> None:
        """Make the NBD CA and server certificate if NBD is served on TCP with TLS."""
        if self.nbd_tcp_host and self.nbd_tcp_port and not self.nbd_tcp_plain:
            ensure_nbd_ca(self.nbd_tls_dir, self.agent_name or self.name, self.nbd_tcp_host)

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def agent_socket(self) -> Path:
        """HTTP control API of the site's agent (Unix socket)."""
        return self.run_dir / "agent.sock"

    @property
    def nbd_socket(self) -> Path:
        return self.run_dir / "nbd.sock"

    @property
    def agent_dir(self) -> Path:
        return self.data_dir / "agent"

    @property
    def volumes_dir(self) -> Path:
        return self.data_dir / "volumes"

    @property
    def journals_dir(self) -> Path:
        return self.data_dir / "journals"

    @property
    def scratch_dir(self) -> Path:
        """Scratch files of writable recovery images (failover tests)."""
        return self.agent_dir / "scratch"

    @property
    def reports_dir(self) -> Path:
        """Recovery reports kept by the manager (``ID.json`` and ``ID.html``)."""
        return self.data_dir / "reports"

    @property
    def storage_allowed(self) -> tuple[Path, ...]:
        """Directories a group's journal or pre-seeded replicas may be in (or under)."""
        return (self.data_dir, *self.storage_roots)

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    def identity(self) -> SiteIdentity:
        """The key and certificate of this site, or of this joined agent (``agent_id``).

        Made on first use for sites older than them."""
        return ensure_identity(self.tls_dir, self.agent_name or self.name,
                               self.agent_id or self.site_id)

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{self.data_dir / 'manager.db'}"

    @classmethod
    def create(
        cls, name: str, data_dir: Path, api: str, replication: str,
        advertise_replication: str | None = None, nbd_tcp: str | None = None,
        buffer_bytes: int = 512 << 20, throttle_bytes_per_s: int | None = None,
        throttle_schedule: str | None = None, bitmap_bytes: int = 8 << 20,
        metrics: str | None = None, database: str | None = None, peer_api: str | None = None,
        agent_control: str | None = None, nbd_tcp_plain: bool = False,
        socket_group: str | None = None, clone_dir: Path | None = None,
        scripts_dir: Path | None = None, script_user: str | None = None,
        storage_roots: tuple[Path, ...] = (), hypervisor: str = "none",
        tls_cert: Path | None = None, tls_key: Path | None = None, insecure_http: bool = False,
    ) -> SiteConfig:
        data_dir = data_dir.resolve()
        if (data_dir / CONFIG_NAME).exists():
            raise Conflict(f"{data_dir} already holds a site")
        api_host, api_port = parse_host_port(api)
        if (tls_cert is None) != (tls_key is None):
            raise InvalidInput("--tls-cert and --tls-key go together")
        if insecure_http and not is_loopback(api_host):
            raise InvalidInput(INSECURE_BEYOND_LOOPBACK.format(host=api_host))
        replication_host, replication_port = parse_host_port(replication)
        advertised = parse_host_port(advertise_replication) if advertise_replication else None
        nbd_tcp_address = parse_host_port(nbd_tcp) if nbd_tcp else None
        metrics_address = parse_host_port(metrics) if metrics else None
        peer_api_address = parse_host_port(peer_api) if peer_api else None
        control_address = parse_host_port(agent_control) if agent_control else None
        try:
            config = cls(
                name=name,
                site_id=str(uuid.uuid4()),
                data_dir=data_dir,
                api_host=api_host,
                api_port=api_port,
                replication_host=replication_host,
                replication_port=replication_port,
                advertise_replication_host=advertised[0] if advertised else None,
                advertise_replication_port=advertised[1] if advertised else None,
                nbd_tcp_host=nbd_tcp_address[0] if nbd_tcp_address else None,
                nbd_tcp_port=nbd_tcp_address[1] if nbd_tcp_address else None,
                nbd_tcp_plain=nbd_tcp_plain,
                buffer_bytes=buffer_bytes,
                bitmap_bytes=bitmap_bytes,
                throttle_bytes_per_s=throttle_bytes_per_s,
                throttle_schedule=throttle_schedule,
                metrics_host=metrics_address[0] if metrics_address else None,
                metrics_port=metrics_address[1] if metrics_address else None,
                database=database,
                peer_api_host=peer_api_address[0] if peer_api_address else None,
                peer_api_port=peer_api_address[1] if peer_api_address else None,
                control_host=control_address[0] if control_address else None,
                control_port=control_address[1] if control_address else None,
                socket_group=socket_group,
                clone_dir=(clone_dir or data_dir / "clones").resolve(),
                scripts_dir=(scripts_dir or data_dir / "scripts").resolve(),
                script_user=script_user,
                storage_roots=tuple(root.resolve() for root in storage_roots),
                hypervisor=hypervisor,
                api_tls_cert=tls_cert.resolve() if tls_cert else None,
                api_tls_key=tls_key.resolve() if tls_key else None,
                insecure_http=insecure_http,
            )
        except ValueError as exc:
            raise InvalidInput(f"invalid site settings: {exc}") from None
        if script_user is not None:
            try:
                pwd.getpwnam(script_user)
            except KeyError:
                raise InvalidInput(f"--script-user {script_user}: no such user") from None
        if config.peer_api[1] >= 65536 or config.peer_api in (
                (api_host, api_port), (replication_host, replication_port)):
            raise InvalidInput(f"the peer API cannot listen on {config.peer_api_url}: "
                               "give --peer-api HOST:PORT, apart from --api and --replication")
        if control_address in ((api_host, api_port), (replication_host, replication_port),
                               config.peer_api):
            raise InvalidInput(f"the agent's control API cannot listen on {agent_control}: "
                               "give --agent-control HOST:PORT apart from the other listeners")
        if socket_group is not None:
            group_id(socket_group)  # InvalidInput before anything is made
        if config.api_tls_cert is not None and config.api_tls_key is not None:
            server_context(config.api_tls_cert, config.api_tls_key)  # they load, together
            leaf_pem(config.api_tls_cert)
        for directory in (data_dir, config.run_dir, config.agent_dir, config.volumes_dir,
                          config.journals_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for private in (config.clone_dir, config.scripts_dir):  # what runs or is written as root
            private.mkdir(mode=0o700, parents=True, exist_ok=True)
            private.chmod(0o700)
        config.secure()
        config.identity()
        config.ensure_nbd_tls()
        atomic_write_json(data_dir / CONFIG_NAME, config.model_dump(mode="json"), private=True)
        return config

    def secure(self) -> None:
        """Close the data directory to other local users (``seawall.local_access``)."""
        secure_data_dir(self.data_dir, self.run_dir, self.socket_group)

    @classmethod
    def load(cls, data_dir: Path) -> SiteConfig:
        path = data_dir.resolve() / CONFIG_NAME
        if not path.exists():
            raise NotFound(f"no site in {data_dir} (run `seawall site init` first)")
        return cls.model_validate(json.loads(path.read_text()))
