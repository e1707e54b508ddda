"""No other local user reaches a site's agent or data (docs/security.md, "local user").

Findings of issue 12 this proves fixed, each tried as ``nobody`` against running sites made
under umask 000 inside a world-readable directory (as ``/srv`` is): the control socket
answered anyone (``POST /scripts/run`` ran commands as root); the NBD socket took anyone's
reads and writes; volumes, replicas, journals, reports, keys and ``manager.db`` were
readable by all; ``site init`` made 0777 directories and a 0666 ``site.json``; and an agent
stopped through its socket stayed down while its site ran.
"""

from __future__ import annotations

import errno
import grp
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seawall.errors import SeawallError
from seawall.local_access import bind_unix, secure_data_dir
from seawall.localsites import LocalSite, free_ports
from seawall.manager.clients import agent_client
from security.local_user import as_nobody, needs_root
from support.cli import run_json, seawall
from support.groups import GROUP, protect, tag
from support.sites import agent_pid, stop_for_sure, wait_pid_gone

pytestmark = pytest.mark.e2e
VOLUME_BYTES = 4 << 20
HEALTH_REQUEST = b"GET /health HTTP/1.1\r\nhost: agent\r\n\r\n"


def _init_open_umask(name: str, directory: Path) -> None:
    """``seawall site init`` run the way a careless shell would: umask 000."""
    api, replication, peer = free_ports(3)
    subprocess.run(
        [sys.executable, "-m", "seawall", "site", "init", "--name", name, "--data",
         str(directory), "--api", f"127.0.0.1:{api}", "--replication",
         f"127.0.0.1:{replication}", "--peer-api", f"127.0.0.1:{peer}"],
        check=True, capture_output=True, preexec_fn=lambda: os.umask(0),
    )


@pytest.fixture(scope="module")
def srv() -> Iterator[Path]:
    """A world-readable parent directory, as ``/srv`` is (pytest's own are 0700)."""
    needs_root()
    parent = Path(tempfile.mkdtemp(prefix="seawall-srv-"))
    parent.chmod(0o755)
    (parent / "public").write_text("anyone may read this\n")
    (parent / "public").chmod(0o644)
    try:
        yield parent
    finally:
        shutil.rmtree(parent)


@pytest.fixture(scope="module")
def protected(srv: Path) -> Iterator[tuple[LocalSite, LocalSite]]:
    """prod and dr, made under umask 000, protecting a volume, with a test report at dr."""
    log = (srv / "sites.log").open("w")
    for name in ("prod", "dr"):
        _init_open_umask(name, srv / name)
    prod, dr = LocalSite("prod", srv / "prod", log), LocalSite("dr", srv / "dr", log)
    try:
        prod.launch()
        dr.launch()
        prod.wait_started()
        dr.wait_started()
        protect(prod, dr, bytearray(VOLUME_BYTES), count=8)
        tag(prod, dr, "before-the-test")  # a checkpoint at dr to test
        run_json(dr, "failover", "test", GROUP)
        seawall(dr, "failover", "stop", GROUP, "--result", "pass")
        yield prod, dr
    finally:
        for site in (prod, dr):
            stop_for_sure(site)
        log.close()


# --- probes, run as nobody -----------------------------------------------------------------


def _reach(paths: list[str]) -> dict[str, str]:
    """What each path gives this user: its first byte, its listing, a connection; or errno."""
    seen: dict[str, str] = {}
    for path in paths:
        try:
            mode = os.lstat(path).st_mode
            if stat.S_ISSOCK(mode):
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.settimeout(5)
                    sock.connect(path)
                    sock.sendall(HEALTH_REQUEST)
                    seen[path] = f"answered {sock.recv(64)!r}"
            elif stat.S_ISDIR(mode):
                seen[path] = f"listed {os.listdir(path)[:3]}"
            elif stat.S_ISREG(mode):
                with open(path, "rb") as handle:
                    seen[path] = f"read {handle.read(1)!r}"
            else:
                seen[path] = "skipped"
        except OSError as exc:
            seen[path] = errno.errorcode.get(exc.errno or 0, str(exc))
    return seen


def _ask(path: str, request: bytes) -> bytes:
    """The server's first answer to ``request``; b"" if it closed the connection instead."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        try:
            sock.sendall(request)
            return sock.recv(256)
        except (BrokenPipeError, ConnectionResetError):
            return b""


def _tree(directory: Path) -> list[Path]:
    return [directory, *sorted(directory.rglob("*"))]


# --- the tests -----------------------------------------------------------------------------


def test_nothing_of_a_running_site_is_reachable_by_another_local_user(
        protected: tuple[LocalSite, LocalSite], srv: Path) -> None:
    prod, dr = protected
    entries = [entry for site in (prod, dr) for entry in _tree(site.directory)]
    kinds = {entry.name for entry in entries} | {entry.suffix for entry in entries}
    # What is at stake is there: keys, the database, volumes, journals, reports, sockets.
    # (sink-connections: the count the stall watchdog reads, issue 14)
    assert {"agent.sock", "nbd.sock", "manager.db", "site.json", ".html", ".key",
            "sink-connections"} <= kinds, kinds
    assert any(entry.parent.name == "volumes" for entry in entries)

    # Made under umask 000 and still private: no bit for group or others anywhere.
    opened = {str(entry): oct(entry.lstat().st_mode & 0o777) for entry in entries
              if not entry.is_symlink() and entry.lstat().st_mode & 0o077}
    assert not opened, f"reachable by group or others: {opened}"

    # And as nobody: every entry refused. The public file proves the probe itself works.
    public = str(srv / "public")
    seen = as_nobody(_reach, [public, *(str(entry) for entry in entries)])
    assert seen.pop(public).startswith("read")
    reached = {path: outcome for path, outcome in seen.items() if outcome != "EACCES"}
    assert not reached, f"nobody reached: {reached}"


def test_the_control_socket_answers_root_only_even_when_its_file_is_opened_up(
        protected: tuple[LocalSite, LocalSite]) -> None:
    prod, _ = protected
    control = prod.config.agent_socket
    marker = prod.directory.parent / "ran-as-root"
    run_script = (b'POST /scripts/run HTTP/1.1\r\nhost: agent\r\ncontent-type: '
                  b'application/json\r\ncontent-length: %d\r\n\r\n')
    body = b'{"path": "/usr/bin/touch", "args": ["%s"], "timeout_s": 5}' % str(marker).encode()
    modes = {path: path.stat().st_mode & 0o777 for path in (prod.directory, control.parent)}
    try:  # an operator's mistake: the socket and its directories opened to everyone
        for path in modes:
            path.chmod(0o755)
        control.chmod(0o666)
        assert as_nobody(_ask, str(control), HEALTH_REQUEST) == b""
        assert as_nobody(_ask, str(control), run_script % len(body) + body) == b""
    finally:
        control.chmod(0o600)
        for path, mode in modes.items():
            path.chmod(mode)
    assert not marker.exists()
    assert _ask(str(control), HEALTH_REQUEST).startswith(b"HTTP/1.1 200")  # root: served


def test_an_agent_that_stops_while_its_site_runs_is_started_again(
        protected: tuple[LocalSite, LocalSite]) -> None:
    prod, dr = protected
    for how in ("shutdown", "SIGKILL"):
        pid = agent_pid(dr)
        assert pid is not None
        if how == "shutdown":
            client = agent_client(dr.config, timeout_s=5.0)
            client.post("/shutdown")
            client.close()
        else:
            os.kill(pid, 9)
        assert wait_pid_gone(pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                client = agent_client(dr.config, timeout_s=2.0)
                client.get("/health")
                client.close()
                break
            except SeawallError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"the agent was not started again after {how}")
        assert agent_pid(dr) not in (None, pid)
    tag(prod, dr, "after-restarts")  # the new agent receives: replication goes on


def test_the_socket_group_reaches_the_nbd_socket_and_nothing_else(srv: Path) -> None:
    group = grp.getgrnam("daemon")  # a group nobody is not in
    data = srv / "grouped"
    run = data / "run"
    run.mkdir(parents=True)
    (data / "manager.db").write_text("secret")
    (data / "volumes").mkdir()
    secure_data_dir(data, run, group.gr_name)
    nbd, control = bind_unix(run / "nbd.sock", group.gr_name), bind_unix(run / "agent.sock")
    try:
        for sock in (nbd, control):
            sock.listen()
        paths = [str(run / "nbd.sock"), str(run / "agent.sock"), str(data / "manager.db"),
                 str(data / "volumes"), str(data)]

        def connect_only(paths: list[str]) -> dict[str, str]:
            seen = {}
            for path in paths:
                try:
                    if path.endswith(".sock"):
                        with socket.socket(socket.AF_UNIX) as sock:
                            sock.connect(path)
                    else:
                        os.listdir(path) if os.path.isdir(path) else open(path).close()
                    seen[path] = "reached"
                except OSError as exc:
                    seen[path] = errno.errorcode[exc.errno or 0]
            return seen

        member = as_nobody(connect_only, paths, groups=(group.gr_gid,))
        assert member == dict(zip(paths, ["reached", "EACCES", "EACCES", "EACCES", "EACCES"],
                                  strict=True))
        assert set(as_nobody(connect_only, paths).values()) == {"EACCES"}
    finally:
        nbd.close()
        control.close()
