"""Access commands: ``login``, ``logout``, ``whoami``, ``user ...`` and ``token ...``.

``login`` keeps the token in the credentials file (``cli.credentials``) under the manager's
URL, so later commands against that URL send it. Passwords are read from a prompt with no
echo, or from standard input (``--password-stdin``), never from the command line; a token
to keep also from standard input (``--token -``) or a file (``--token-file``), for the
reasons ``cli.options`` gives. A token is printed once, when made: the manager keeps only
its hash.
"""

from __future__ import annotations

import getpass
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from seawall.cli.credentials import CredentialStore
from seawall.cli.options import (
    JsonOption,
    TokenOption,
    UrlOption,
    manager,
    manager_client,
    manager_url,
    secret,
)
from seawall.cli.output import console, print_json, print_line, print_table
from seawall.cli.trust import login_trust
from seawall.errors import InvalidInput, SeawallError
from seawall.units import parse_duration_s

user_app = typer.Typer(no_args_is_help=True, help="Users of a site manager (admin).")
token_app = typer.Typer(no_args_is_help=True, help="Your API tokens (others': admin).")

PasswordStdinOption = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password from the first line of standard input.")]
ExpiresOption = Annotated[str | None, typer.Option(
    "--expires", help="Lifetime, e.g. 12h or 90d (default: none).")]
OfUserOption = Annotated[str | None, typer.Option(
    "--user", help="Another user's tokens (admin only).")]


def add_access_commands(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("whoami")(whoami)
    app.add_typer(user_app, name="user")
    app.add_typer(token_app, name="token")


def _read_password(from_stdin: bool, prompt: str = "Password: ") -> str:
    password = sys.stdin.readline().rstrip("\r\n") if from_stdin else getpass.getpass(prompt)
    if not password:
        raise InvalidInput("no password given")
    return password


def _lifetime_s(expires: str | None) -> float | None:
    return None if expires is None else parse_duration_s(expires)


# --- login -----------------------------------------------------------------------------


def login(
    url: UrlOption = None,
    user: Annotated[str | None, typer.Option(help="User name (asked if not given).")] = None,
    password_stdin: PasswordStdinOption = False,
    token: Annotated[str | None, typer.Option(
        help="Keep this API token (e.g. the one `site init` printed) instead of a password "
             "login; '-': read it from standard input.", show_default=False)] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", help="Keep the API token in this file (its first line).")] = None,
    expires: Annotated[str, typer.Option(
        "--expires", help="Lifetime of the token a password login makes.")] = "30d",
    fingerprint: Annotated[str | None, typer.Option(
        "--fingerprint", help="Pin the server's certificate only if its SHA-256 is this "
        "(as `site init` printed it); also to accept a new certificate.")] = None,
    ca_bundle: Annotated[Path | None, typer.Option(
        "--ca-bundle", help="Trust the server's certificate if these CAs (PEM) issued it for "
        "the URL's host name, instead of pinning it.")] = None,
) -> None:
    """Log in to a site manager; later commands against its URL send the token.

    On first contact it shows the server's certificate fingerprint and pins it for the URL;
    with --fingerprint (or --ca-bundle) and no new credentials it accepts a new certificate
    for the token kept already."""
    base_url = manager_url(url)
    token = secret(token, token_file, None, "API token")  # SEAWALL_TOKEN needs no login
    tls, new_pin = login_trust(base_url, fingerprint, ca_bundle)
    if new_pin is not None and new_pin.pop("first_contact", False):
        console.print(f"first contact with {base_url}: its certificate's fingerprint (sha256) "
                      f"is {new_pin['fingerprint']}; compare it with the one `seawall site "
                      "init` printed. Pinned for this URL once logged in.", highlight=False)
    kept = CredentialStore().get(base_url)
    if not token and user is None and new_pin is not None and kept and kept.get("token"):
        # A new certificate accepted (--fingerprint, --ca-bundle): the kept token goes on.
        me = manager_client(base_url, str(kept["token"]), tls, timeout_s=30.0).get("/api/v1/me")
        entry = kept
    elif token:
        client = manager_client(base_url, token, tls, timeout_s=30.0)
        me = client.get("/api/v1/me")
        entry = {"token": token, "user": me["user"], "token_id": me["token_id"],
                 "from_login": False}
    else:
        name = user or typer.prompt("User")
        client = manager_client(base_url, None, tls, timeout_s=30.0)
        made = client.post("/api/v1/login", {
            "user": name, "password": _read_password(password_stdin),
            "expires_s": parse_duration_s(expires), "name": f"login {socket.gethostname()}"})
        me = {"user": made["user"], "role": made["role"]}
        entry = {"token": made["token"], "user": made["user"], "token_id": made["id"],
                 "from_login": True}
    store = CredentialStore()
    if new_pin is not None:
        store.put_pin(base_url, new_pin)
    store.put(base_url, entry)
    console.print(f"logged in to {base_url} as {me['user']} ({me['role']}); "
                  f"token kept in {store.path}")


def logout(url: UrlOption = None) -> None:
    """Forget the token kept for a manager (and revoke it if a password login made it)."""
    base_url = manager_url(url)
    entry = CredentialStore().remove(base_url)
    if entry is None:
        console.print(f"not logged in to {base_url}")
        return
    if entry.get("from_login"):
        try:
            manager(base_url, str(entry["token"])).delete(f"/api/v1/tokens/{entry['token_id']}")
        except SeawallError as exc:  # expired, revoked, or the manager is down: forgotten
            console.print(f"token not revoked: {exc.message}")
    console.print(f"logged out of {base_url}")


def whoami(url: UrlOption = None, token: TokenOption = None,
           json_output: JsonOption = False) -> None:
    """The user (and role) a manager knows you as."""
    me = manager(url, token).get("/api/v1/me")
    if json_output:
        print_json(me)
    else:
        print_line(f"{me['user']} ({me['role']}), token {me['token_id']}")


# --- users -----------------------------------------------------------------------------


@user_app.command("create")
def user_create(
    name: str,
    role: Annotated[str, typer.Option(help="admin, operator or viewer.")],
    password_stdin: PasswordStdinOption = False,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Create a user: with a password (--password-stdin) to log in, else with a first token."""
    password = _read_password(True) if password_stdin else None
    made = manager(url, token).post("/api/v1/users",
                                    {"name": name, "role": role, "password": password})
    if json_output:
        print_json(made)
    elif "token" in made:
        console.print(f"user {name} ({made['role']}) created; API token (shown once, only "
                      "its hash is kept):")
        print_line(made["token"])
    else:
        console.print(f"user {name} ({made['role']}) created; log in with "
                      f"`seawall login --user {name}`")


@user_app.command("list")
def user_list(url: UrlOption = None, token: TokenOption = None,
              json_output: JsonOption = False) -> None:
    """List users and their roles."""
    users = manager(url, token).get("/api/v1/users")
    if json_output:
        print_json(users)
    else:
        print_table(users, ["name", "role", "password", "created_at"])


@user_app.command("delete")
def user_delete(name: str, url: UrlOption = None, token: TokenOption = None) -> None:
    """Delete a user and their tokens (never the last admin)."""
    manager(url, token).delete(f"/api/v1/users/{name}")
    console.print(f"user {name} deleted")


@user_app.command("set-role")
def user_set_role(
    name: str, role: Annotated[str, typer.Argument(help="admin, operator or viewer.")],
    url: UrlOption = None, token: TokenOption = None,
) -> None:
    """Change a user's role (the last admin stays one)."""
    changed = manager(url, token).put(f"/api/v1/users/{name}/role", {"role": role})
    console.print(f"user {name} is now {changed['role']}")


@user_app.command("set-password")
def user_set_password(name: str, password_stdin: PasswordStdinOption = False,
                      url: UrlOption = None, token: TokenOption = None) -> None:
    """Set a user's password (prompted, or from standard input)."""
    password = _read_password(password_stdin, f"New password for {name}: ")
    manager(url, token).put(f"/api/v1/users/{name}/password", {"password": password})
    console.print(f"password of {name} set")


# --- tokens ----------------------------------------------------------------------------


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", help="A label, e.g. what uses it.")] = "",
    expires: ExpiresOption = None,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Make a new API token of yours; it is printed once."""
    made = manager(url, token).post("/api/v1/tokens",
                                    {"name": name, "expires_s": _lifetime_s(expires)})
    if json_output:
        print_json(made)
        return
    console.print(f"token {made['id']} of {made['user']} (shown once, only its hash is "
                  "kept):", highlight=False)
    print_line(made["token"])


@token_app.command("list")
def token_list(user: OfUserOption = None, url: UrlOption = None, token: TokenOption = None,
               json_output: JsonOption = False) -> None:
    """List your tokens (or --user's): id, name, expiry, state."""
    path = f"/api/v1/users/{user}/tokens" if user else "/api/v1/tokens"
    tokens: list[dict[str, Any]] = manager(url, token).get(path)
    if json_output:
        print_json(tokens)
    else:
        print_table(tokens, ["id", "name", "created_at", "expires_at", "state"])


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(metavar="ID")],
                 user: OfUserOption = None, url: UrlOption = None,
                 token: TokenOption = None) -> None:
    """Revoke one of your tokens (or --user's) at once."""
    path = f"/api/v1/users/{user}/tokens/{token_id}" if user else f"/api/v1/tokens/{token_id}"
    manager(url, token).delete(path)
    console.print(f"token {token_id} revoked")
