"""Access for whoever holds a site's data directory (and so its database): no API involved.

``site init`` gets the first admin's token here; ``seawall site admin-token`` (and local
test sites) get a new admin token for a site that already exists — the way back in after
a lost token, and for a site made before it had users. Having the data directory is
already full control of the site, so this grants nothing new.
"""

from __future__ import annotations

from seawall.config import SiteConfig
from seawall.manager.access.service import AccessService
from seawall.manager.models import create_database


def first_admin_token(config: SiteConfig) -> str | None:
    """Make the database of a new site, its ``admin`` user and that user's first token
    (None if the database, kept from before, has users already)."""
    engine, sessions = create_database(config.database_url)
    try:
        return AccessService(sessions).create_first_admin()
    finally:
        engine.dispose()


def local_admin_token(config: SiteConfig, token_name: str) -> str:
    """A new token of the user ``admin`` (made, or made an admin again, if need be)."""
    engine, sessions = create_database(config.database_url)
    try:
        return AccessService(sessions).admin_token(token_name)
    finally:
        engine.dispose()
