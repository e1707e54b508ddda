"""Names from users and guests reach operators' terminals as text, end to end.

The issue's findings, through the real ``seawall`` command against two real sites: a tag
named ``[bold red]M[/bold red] [/nonexistent]`` made ``checkpoint list`` (at both sites)
and ``event list`` fail with MarkupError; ESC in names reached the terminal raw
(``checkpoint list``, ``files ls``). Now such a tag lists as typed, a name with control
characters is refused where a tag is made (manager and agent), and names nobody validates
(file names in a guest's file system, token labels) are shown escaped.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from seawall.errors import InvalidInput
from seawall.localsites import LocalSite
from seawall.manager.clients import agent_client
from seawall.nbd.blocking import NbdClient
from support.cli import seawall
from support.groups import GROUP, protect

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("mke2fs") is None, reason="needs e2fsprogs (make debs)"),
]
MIB = 1 << 20
MARKUP = "[bold red]M[/bold red] [/nonexistent]"
HOSTILE_FILES = {  # as made in the guest: as ``files ls`` must show it
    "clear\x1b[2Jscreen": "clear\\x1b[2Jscreen",
    "[bold red]styled": "[bold red]styled",
    "invoice\u202efdp.exe": "invoice\\u202efdp.exe",
    "title\x1b]0;owned\x07": "title\\x1b]0;owned\\x07",
}


def flat(text: str) -> str:
    """Messages on stderr wrap at COLUMNS too, at spaces: compare without line breaks."""
    return text.replace("\n", "")


def test_hostile_names_list_as_text(sites: tuple[LocalSite, LocalSite], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    prod, dr = sites
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps cells at 80 columns off a terminal
    model = bytearray(16 * MIB)
    uri = protect(prod, dr, model, count=0)
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in HOSTILE_FILES:
        (tree / name).write_bytes(b"x")
    image = tmp_path / "disk.ext4"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(image), "16M"],
                   check=True, capture_output=True)
    with NbdClient(uri) as client:
        client.write(0, image.read_bytes())
        client.flush()

    # The tag: printable, so taken; listed as typed at both sites.
    tagged = int(seawall(prod, "checkpoint", "tag", GROUP, "--name", MARKUP).stdout)
    dr.wait_checkpoint(GROUP, tagged)
    for site in (prod, dr):
        listing = seawall(site, "checkpoint", "list", GROUP)
        assert MARKUP in listing.stdout and "Traceback" not in listing.stderr

    # Control characters in a tag: refused by the manager, and by the agent if asked itself.
    refused = seawall(prod, "checkpoint", "tag", GROUP, "--name", "\x1b[2Jgone", check=False)
    assert refused.returncode == 2, refused.stderr
    assert "printable characters only: \\x1b at position 0" in flat(refused.stderr)
    assert "\x1b" not in refused.stderr
    [group] = prod.api.get("/api/v1/groups")
    agent = agent_client(prod.config)
    with pytest.raises(InvalidInput, match="printable"):
        agent.post(f"/groups/{group['group_id']}/checkpoints", {"name": "rtl\u202eexe"})
    names = [c["name"] for c in prod.api.get(f"/api/v1/groups/{GROUP}/checkpoints")]
    assert MARKUP in names and not any("\x1b" in n or "\u202e" in n for n in names)

    # A label nobody validates (a token's): listed escaped, in its table and the event log.
    label = f"ci {MARKUP}\x1b[8m"
    seawall(prod, "token", "create", "--name", label)
    tokens = seawall(prod, "token", "list")
    assert f"ci {MARKUP}\\x1b[8m" in flat(tokens.stdout) and "\x1b" not in tokens.stdout
    events = seawall(prod, "event", "list")
    assert MARKUP in flat(events.stdout) and "\x1b" not in events.stdout

    # File names in the guest's file system, at the recovery site.
    files = seawall(dr, "files", "ls", GROUP, "disk0", "/", "--checkpoint", str(tagged))
    shown = flat(files.stdout)
    for escaped in HOSTILE_FILES.values():
        assert escaped in shown, (escaped, files.stdout)
    assert "\x1b" not in files.stdout + files.stderr and "\u202e" not in files.stdout
    assert MARKUP in flat(files.stderr)  # the header line names the checkpoint
