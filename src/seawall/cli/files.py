"""File-level restore commands: ``files ls`` and ``files get``.

They ask the recovery site's manager (``--url``) to read the volume at a checkpoint;
``get`` receives a tar stream and unpacks it under ``--to`` on this host with
``seawall.cli.unpack`` (safe, all or nothing), with progress on stderr. An interrupted
``get`` (Ctrl-C, SIGTERM, SIGHUP) leaves ``--to`` as it was and exits 128 + the signal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from seawall.cli.options import JsonOption, UrlOption, manager
from seawall.cli.output import console, print_json, print_table, progress, time_text
from seawall.cli.unpack import Interrupted, target_of, unpack
from seawall.errors import PeerError
from seawall.units import format_bytes

SUMMARY_HEADER = "X-Seawall-Restore"  # as seawall.manager.files.routes sends it

files_app = typer.Typer(no_args_is_help=True,
                        help="Read files out of a volume at a checkpoint (no mounting).")

CheckpointOption = Annotated[str, typer.Option(
    help="A checkpoint id, 'latest' or 'latest-tagged' (newest with a name).")]
PartitionOption = Annotated[int | None, typer.Option(
    help="Partition number, when the volume has a partition table with several.")]


def add_files_commands(app: typer.Typer) -> None:
    app.add_typer(files_app, name="files")


@files_app.command("ls")
def files_ls(
    group: str, volume: str,
    path: Annotated[str, typer.Argument(help="A directory or file in the volume.")] = "/",
    checkpoint: CheckpointOption = "latest", partition: PartitionOption = None,
    url: UrlOption = None, json_output: JsonOption = False,
) -> None:
    """List PATH (a directory's entries, or one file) in VOLUME of GROUP at a checkpoint."""
    listing = manager(url).request("GET", f"/api/v1/files/{group}/{volume}",
                                   params=_params(path, checkpoint, partition))
    if json_output:
        print_json(listing)
        return
    console.print(f"{_source_text(listing)}: {listing['path']}")
    rows = [{**entry, "size": entry["size_bytes"], "mtime": time_text(entry["mtime_ns"]),
             "name": entry["name"] + (f" -> {entry['link_target']}"
                                      if entry["link_target"] else "")}
            for entry in listing["entries"]]
    print_table(rows, ["type", "mode", "size", "mtime", "name"])


@files_app.command("get")
def files_get(
    group: str, volume: str,
    path: Annotated[str, typer.Argument(help="A file or directory (copied recursively).")],
    to: Annotated[Path, typer.Option("--to", help="Directory (on this host) to restore into; "
                                     "made if missing. PATH's last name must not exist there.")],
    checkpoint: CheckpointOption = "latest", partition: PartitionOption = None,
    url: UrlOption = None, json_output: JsonOption = False,
) -> None:
    """Restore PATH from VOLUME of GROUP at a checkpoint into --to, keeping modes and mtimes."""
    to = to.absolute()
    client = manager(url)
    params = _params(path, checkpoint, partition)
    with client.stream(f"/api/v1/files/{group}/{volume}/archive", params) as response:
        try:
            summary: dict[str, Any] = json.loads(response.headers[SUMMARY_HEADER])
        except (KeyError, ValueError):
            raise PeerError(f"the site manager sent no valid {SUMMARY_HEADER} header") from None
        target_of(to, summary["name"])  # Conflict before a byte is written
        with progress() as bar:
            task = bar.add_task(f"restore of {summary['path']}", total=summary["bytes"])
            try:
                result = unpack(response.iter_bytes(), to, summary["name"],
                                lambda done: bar.update(task, completed=done))
            except Interrupted as interrupted:
                bar.stop()
                console.print(f"interrupted ({interrupted}): nothing restored, {to} is as "
                              "it was")
                raise typer.Exit(128 + interrupted.signal_number) from None
    if json_output:
        print_json({**summary, "to": str(result.path), "written": {
            "files": result.files, "directories": result.directories,
            "symlinks": result.symlinks, "bytes": result.bytes}})
        return
    console.print(f"{_source_text(summary)}: {summary['path']} restored to {result.path} "
                  f"({result.files} files, {result.directories} directories, "
                  f"{result.symlinks} symlinks, {format_bytes(result.bytes)})")
    if summary["skipped_count"]:
        console.print(f"skipped {summary['skipped_count']} special files (devices, fifos, "
                      f"sockets): {', '.join(summary['skipped'])}")


def _params(path: str, checkpoint: str, partition: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {"path": path, "checkpoint": checkpoint}
    if partition is not None:
        params["partition"] = partition
    return params


def _source_text(facts: dict[str, Any]) -> str:
    checkpoint = facts["checkpoint"]
    name = f" '{checkpoint['name']}'" if checkpoint["name"] else ""
    where = f"{facts['group']}/{facts['volume']}"
    if facts["partition"] is not None:
        where += f" partition {facts['partition']['number']} ({facts['partition_table']})"
    return (f"{where} at checkpoint {checkpoint['id']}{name} "
            f"({time_text(checkpoint['time_ns'])}), {facts['filesystem']}")
