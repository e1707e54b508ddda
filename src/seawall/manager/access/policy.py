"""Who may call what on the site manager: one pure table, refused unless listed.

Rules:
- ``POLICY`` maps (HTTP method, route path template) to the ``Access`` it needs. A route
  missing from it is refused to everyone, admins included (``decide`` → ``FORBIDDEN``):
  adding an endpoint means deciding its entry here, and the test over every route fails
  until one is made.
- Roles are nested: a viewer reads state (GET), an operator also runs operations and
  reads the protected data (checkpoint tags, resyncs, exports, failover tests, clones,
  file restore), an admin also changes the site's configuration (pairing, volumes,
  groups) and its users.
- Five entries need no user token, each for a reason that holds without one: ``OPEN``
  (health, the API's own description), ``PASSWORD`` (login: the body is the credential),
  ``PAIRING`` (the pairing handshake: the single-use pairing token in the body),
  ``AGENT_JOIN`` (an agent of another host joins: the single-use join token in the body)
  and ``PEER`` (manager-to-manager calls: the caller is the paired site whose pinned
  certificate it presented over mutual TLS). ``PEER`` is allowed only under
  ``PEER_PREFIX``, ``PAIRING`` and ``AGENT_JOIN`` only for their handshakes, so no user
  route can be reached without a token.
- Two listeners serve the one table (``served``): the peer API (mutual TLS) serves the
  ``PEER`` routes and health, nothing else; the API serves everything but ``PEER`` routes.
- A role decides whether one may call a route, never where on a host it writes or what
  it runs there: a clone's ``--to`` is taken only inside the site's clone directory, a
  script only from its scripts directory, a storage location or pre-seed only inside the
  directories it allows, for every role (``seawall.confined``, checked where the site
  writes or runs). Naming scripts and storage (group create and settings) is an admin's.
- HEAD is decided as GET. Pure: no I/O, no FastAPI.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from seawall.errors import InvalidInput


class Role(enum.IntEnum):
    """A user's role; a higher role may do everything a lower one may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise InvalidInput(f"role must be admin, operator or viewer, not {text!r}") from None


class Access(enum.Enum):
    OPEN = "open"
    PASSWORD = "password"
    PAIRING = "pairing"
    AGENT_JOIN = "agent-join"
    PEER = "peer"
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def role(self) -> Role | None:
        """The least role this access needs, or None when it takes no user token."""
        return Role[self.name] if self.name in Role.__members__ else None


class Decision(enum.Enum):
    ALLOW = "allow"
    UNAUTHENTICATED = "unauthenticated"  # a user token is needed and none valid was given
    FORBIDDEN = "forbidden"  # the user's role may not, or the route has no entry


PEER_PREFIX = "/api/v1/peer/"
PAIRING_HANDSHAKE = "/api/v1/pairing/accept"  # authenticated by the single-use pairing token
AGENT_JOIN_HANDSHAKE = "/api/v1/agents/join"  # authenticated by the single-use join token

VIEWER, OPERATOR, ADMIN = Access.VIEWER, Access.OPERATOR, Access.ADMIN
POLICY: Mapping[tuple[str, str], Access] = {
    ("GET", "/health"): Access.OPEN,
    ("GET", "/openapi.json"): Access.OPEN,
    ("GET", "/docs"): Access.OPEN,
    ("GET", "/docs/oauth2-redirect"): Access.OPEN,
    ("GET", "/redoc"): Access.OPEN,
    # users and tokens (seawall.manager.access.routes)
    ("POST", "/api/v1/login"): Access.PASSWORD,
    ("GET", "/api/v1/me"): VIEWER,
    ("GET", "/api/v1/tokens"): VIEWER,  # the caller's own tokens
    ("POST", "/api/v1/tokens"): VIEWER,
    ("DELETE", "/api/v1/tokens/{token_id}"): VIEWER,
    ("GET", "/api/v1/users"): ADMIN,
    ("POST", "/api/v1/users"): ADMIN,
    ("DELETE", "/api/v1/users/{name}"): ADMIN,
    ("PUT", "/api/v1/users/{name}/role"): ADMIN,
    ("PUT", "/api/v1/users/{name}/password"): ADMIN,
    ("GET", "/api/v1/users/{name}/tokens"): ADMIN,
    ("DELETE", "/api/v1/users/{name}/tokens/{token_id}"): ADMIN,
    # site and pairing
    ("GET", "/api/v1/site"): VIEWER,
    ("GET", "/api/v1/peers"): VIEWER,
    ("POST", "/api/v1/pairing/token"): ADMIN,
    ("POST", "/api/v1/pairing"): ADMIN,
    ("POST", PAIRING_HANDSHAKE): Access.PAIRING,
    ("DELETE", "/api/v1/peers/{name}"): ADMIN,  # unpair
    ("DELETE", "/api/v1/peer/pairing"): Access.PEER,  # the calling site unpairs
    # agents: the site's own, and those joined from other hosts (seawall.manager.agents)
    ("GET", "/api/v1/agents"): VIEWER,
    ("POST", "/api/v1/agents/token"): ADMIN,
    ("POST", AGENT_JOIN_HANDSHAKE): Access.AGENT_JOIN,
    ("DELETE", "/api/v1/agents/{name}"): ADMIN,
    # volumes: adding one serves a host file or device over NBD
    ("GET", "/api/v1/volumes"): VIEWER,
    ("POST", "/api/v1/volumes"): ADMIN,
    ("POST", "/api/v1/volumes/add"): ADMIN,
    ("GET", "/api/v1/vms"): VIEWER,  # the VMs of the site's hosts
    ("DELETE", "/api/v1/volumes/{name}"): ADMIN,
    # groups and checkpoints
    ("GET", "/api/v1/groups"): VIEWER,
    ("POST", "/api/v1/groups"): ADMIN,
    ("GET", "/api/v1/groups/{name}"): VIEWER,
    ("GET", "/api/v1/groups/{name}/checkpoints"): VIEWER,
    ("GET", "/api/v1/groups/{name}/vms/{vm}"): VIEWER,  # `vm show`
    ("POST", "/api/v1/groups/{name}/checkpoints"): OPERATOR,
    ("POST", "/api/v1/groups/{name}/resync"): OPERATOR,
    ("POST", "/api/v1/peer/groups"): Access.PEER,
    ("POST", "/api/v1/peer/groups/{name}/checkpoints"): Access.PEER,
    ("GET", "/api/v1/peer/groups/{name}/checkpoints"): Access.PEER,
    ("GET", "/api/v1/peer/groups/{name}/vms/{vm}"): Access.PEER,
    ("POST", "/api/v1/peer/groups/{name}/resync"): Access.PEER,
    ("POST", "/api/v1/peer/groups/{name}/fence"): Access.PEER,
    ("POST", "/api/v1/peer/groups/{name}/unfence"): Access.PEER,
    ("POST", "/api/v1/peer/groups/{name}/reverse"): Access.PEER,
    ("POST", "/api/v1/groups/{name}/unfence"): OPERATOR,
    ("POST", "/api/v1/groups/{name}/reverse"): ADMIN,
    ("GET", "/api/v1/groups/{name}/settings"): VIEWER,
    ("PATCH", "/api/v1/groups/{name}/settings"): ADMIN,
    ("PUT", "/api/v1/peer/groups/{name}/settings"): Access.PEER,
    # members and deletion (seawall.manager.groups.membership); a delete is logged
    ("PATCH", "/api/v1/groups/{name}/volumes"): ADMIN,
    ("DELETE", "/api/v1/groups/{name}"): ADMIN,
    ("PUT", "/api/v1/peer/groups/{name}/volumes"): Access.PEER,
    ("DELETE", "/api/v1/peer/groups/{name}"): Access.PEER,
    # exports and recovery operations
    ("GET", "/api/v1/exports"): VIEWER,
    ("POST", "/api/v1/exports"): OPERATOR,
    ("POST", "/api/v1/exports/stop"): OPERATOR,
    ("GET", "/api/v1/failover/{group}"): VIEWER,
    ("POST", "/api/v1/failover/{group}/test"): OPERATOR,
    ("POST", "/api/v1/failover/{group}/stop"): OPERATOR,
    ("GET", "/api/v1/failover/{group}/live"): VIEWER,
    ("POST", "/api/v1/failover/{group}/live"): OPERATOR,
    ("POST", "/api/v1/failover/{group}/commit"): OPERATOR,
    ("POST", "/api/v1/failover/{group}/rollback"): OPERATOR,
    ("POST", "/api/v1/move/{group}"): OPERATOR,
    ("POST", "/api/v1/clones"): OPERATOR,
    ("GET", "/api/v1/clones/{operation_id}"): VIEWER,
    ("GET", "/api/v1/reports"): VIEWER,
    ("GET", "/api/v1/reports/{report_id}"): VIEWER,
    ("GET", "/api/v1/reports/{report_id}/html"): VIEWER,
    # file-level restore reads the protected data itself, as an export does
    ("GET", "/api/v1/files/{group}/{volume}"): OPERATOR,
    ("GET", "/api/v1/files/{group}/{volume}/archive"): OPERATOR,
    ("GET", "/api/v1/files/{group}/{volume}/content"): OPERATOR,
    # observability (Prometheus scrapes with a bearer token)
    ("GET", "/metrics"): VIEWER,
    # status, alerts, event log, tasks (seawall.manager.monitoring, .events, .tasks)
    ("GET", "/api/v1/status/groups"): VIEWER,
    ("GET", "/api/v1/status/groups/{name}"): VIEWER,
    ("GET", "/api/v1/groups/{name}/history"): VIEWER,
    ("GET", "/api/v1/alerts"): VIEWER,
    ("POST", "/api/v1/alerts/{alert_id}/acknowledge"): OPERATOR,
    ("GET", "/api/v1/events"): VIEWER,
    ("GET", "/api/v1/tasks"): VIEWER,
}


def access_for(method: str, path: str) -> Access | None:
    """The entry for ``method`` on route template ``path``; None when there is none."""
    return POLICY.get(("GET" if method == "HEAD" else method, path))


def decide(method: str, path: str, role: Role | None) -> Decision:
    """Whether a caller with ``role`` (None: no valid user token) may call the route."""
    access = access_for(method, path)
    if access is None:
        return Decision.FORBIDDEN
    needed = access.role
    if needed is None:
        return Decision.ALLOW
    if role is None:
        return Decision.UNAUTHENTICATED
    return Decision.ALLOW if role >= needed else Decision.FORBIDDEN


def served(method: str, path: str, peer_listener: bool) -> bool:
    """Whether the listener (the peer API if ``peer_listener``, else the API) serves the
    route: peer routes (and health, for the peers' probes) there, all the rest here."""
    access = access_for(method, path)
    if peer_listener:
        return access is Access.PEER or (access is Access.OPEN and path == "/health")
    return access is not Access.PEER


def check_policy(policy: Mapping[tuple[str, str], Access]) -> None:
    """Refuse a table that lets a user route be reached without a user token."""
    for (method, path), access in policy.items():
        if access is Access.PEER and not path.startswith(PEER_PREFIX):
            raise ValueError(f"{method} {path}: peer access only under {PEER_PREFIX}")
        if access is Access.PAIRING and path != PAIRING_HANDSHAKE:
            raise ValueError(f"{method} {path}: pairing access only for {PAIRING_HANDSHAKE}")
        if access is Access.AGENT_JOIN and (method, path) != ("POST", AGENT_JOIN_HANDSHAKE):
            raise ValueError(f"{method} {path}: join access only for {AGENT_JOIN_HANDSHAKE}")
        if access is Access.OPEN and method != "GET":
            raise ValueError(f"{method} {path}: only reads may be open")


check_policy(POLICY)
