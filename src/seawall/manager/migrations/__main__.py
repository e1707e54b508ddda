"""Developer tool: ``python -m seawall.manager.migrations revision -m MESSAGE`` and ``check``.

``revision`` writes the next numbered revision into ``versions/``: it upgrades a scratch
SQLite database (or ``--database URL``) to head and lets Alembic compare it with the models
(``--empty`` skips that), then formats the file with ruff when ruff is there. Read and
complete what it wrote: autogenerate sees tables, columns, types, indexes and constraints,
not renames nor data to move. ``check`` prints what separates the models from a database
at head and exits 1 if anything does (the drift test asks the same).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from sqlalchemy import Engine, create_engine

from seawall.manager.migrations import (
    alembic_config,
    schema_differences,
    scripts,
    upgrade_to_head,
)
from seawall.manager.migrations.baseline import describe_difference
from seawall.manager.models import Base


def next_revision_id() -> str:
    numbers = [int(script.revision) for script in scripts().walk_revisions()
               if script.revision.isdigit()]
    return f"{max(numbers, default=0) + 1:04d}"


@contextmanager
def database_at_head(url: str | None) -> Iterator[Engine]:
    with tempfile.TemporaryDirectory(prefix="seawall-migrations-") as scratch:
        engine = create_engine(url or f"sqlite:///{Path(scratch) / 'head.db'}")
        try:
            upgrade_to_head(engine)
            yield engine
        finally:
            engine.dispose()


def revision(message: str, empty: bool, url: str | None) -> Path:
    rev_id = next_revision_id()
    if empty:
        written = command.revision(alembic_config(), message=message, rev_id=rev_id)
    else:
        with database_at_head(url) as engine, engine.begin() as connection:
            if not schema_differences(connection, Base.metadata):
                print("note: the models and the migrations agree; the revision is empty")
            written = command.revision(alembic_config(connection), message=message,
                                       autogenerate=True, rev_id=rev_id)
    assert written is not None and not isinstance(written, list)
    path = Path(written.path)
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff:  # Alembic's output, in the house style (quotes, line length, imports)
        subprocess.run([ruff, "format", "--quiet", str(path)], check=False)
        subprocess.run([ruff, "check", "--fix", "--quiet", str(path)], check=False)
    print(f"wrote {path}: read it, complete it, then run pytest tests/unit/test_migrations.py")
    return path


def check(url: str | None) -> int:
    with database_at_head(url) as engine, engine.connect() as connection:
        differences = schema_differences(connection, Base.metadata)
    for difference in differences:
        print(describe_difference(difference))
    if differences:
        print("the models differ from the migrations: add a revision (see --help)")
    return 1 if differences else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seawall.manager.migrations",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("revision", help="write the next revision from the models")
    new.add_argument("-m", "--message", required=True, help="what the revision changes")
    new.add_argument("--empty", action="store_true", help="no autogenerate: an empty one")
    check_parser = commands.add_parser("check", help="do the models match the migrations?")
    for sub in (new, check_parser):
        sub.add_argument("--database", metavar="URL",
                         help="compare against this database (upgraded to head first) "
                              "instead of a scratch SQLite file")
    args = parser.parse_args(argv)
    if args.command == "revision":
        revision(args.message, args.empty, args.database)
        return 0
    return check(args.database)


if __name__ == "__main__":
    sys.exit(main())
