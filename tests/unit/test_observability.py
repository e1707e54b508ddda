"""Metric families from agent snapshots, the JSON log format, the metrics listener's socket.

The families go through prometheus_client's real exposition and text parser, as a
Prometheus scrape would see them.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from seawall.errors import InvalidInput
from seawall.observability.logs import FORMAT_ENV, JsonFormatter, setup_logging
from seawall.observability.metrics import STATES, KnownGroup, site_families
from seawall.serving import bind_tcp

PROTECTED: dict[str, Any] = {
    "group_id": "g1", "name": "app", "role": "protected", "state": "bitmap-sync",
    "link_up": True, "acked_seq": 41, "buffered_bytes": 4096, "buffer_limit_bytes": 1 << 20,
    "buffered_records": 1, "overflows": 2, "dirty_bytes": 8192, "dirty_map_bytes": 100,
    "rpo_s": None, "newest_replicated_checkpoint_ns": None,
    "sync": {"total_bytes": 1000, "done_bytes": 250, "shipped_bytes": 200},
    "wan": {"sent_bytes": 123456},
    "volumes": [{"name": "disk0", "size_bytes": 1 << 24, "written_bytes": 65536,
                 "write_count": 3},
                {"name": "disk1", "size_bytes": 1 << 24, "written_bytes": 0, "write_count": 0}],
}
RECOVERY: dict[str, Any] = {
    "group_id": "g2", "name": "db", "role": "recovery", "connected": False, "durable_seq": 7,
    "received_bytes": 999, "newest_checkpoint_ns": 1_700_000_000_000_000_000, "rpo_s": 2.5,
    "journal_bytes": 5000, "journal_segments": 1, "journal_max_bytes": None,
    "journal_warning": False, "journal_full": False, "history_target_s": 3600.0,
    "history_covered_s": 60.0, "applied_bytes": 10,
    "volumes": [{"name": "disk9", "size_bytes": 4096}],
}
SNAPSHOT = {"agent": {"site": "prod", "site_id": "s1", "buffer_bytes": 512 << 20,
                      "throttle_bytes_per_s": None, "volumes": 3, "exports": 0},
            "groups": [PROTECTED, RECOVERY]}


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def scrape(families: list[Metric]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Expose ``families`` as Prometheus text and parse it back: {(sample, labels): value}."""
    registry = CollectorRegistry()
    registry.register(_Families(families))
    text = generate_latest(registry).decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


def test_agent_view_of_both_roles() -> None:
    samples = scrape(site_families(SNAPSHOT))
    app = {"group": "app", "role": "protected"}
    db = {"group": "db", "role": "recovery"}
    assert samples[("seawall_volume_written_bytes_total", labels(**app, volume="disk0"))] == 65536
    assert samples[("seawall_volume_writes_total", labels(**app, volume="disk0"))] == 3
    assert samples[("seawall_volume_size_bytes", labels(**db, volume="disk9"))] == 4096
    assert samples[("seawall_group_shipped_bytes_total", labels(**app))] == 123456
    assert samples[("seawall_group_received_bytes_total", labels(**db))] == 999
    assert samples[("seawall_group_buffer_overflows_total", labels(**app))] == 2
    assert samples[("seawall_group_sync_done_bytes", labels(**app))] == 250
    assert samples[("seawall_group_sync_total_bytes", labels(**app))] == 1000
    assert samples[("seawall_group_link_up", labels(**app))] == 1
    assert samples[("seawall_group_link_up", labels(**db))] == 0
    assert samples[("seawall_group_durable_seq", labels(**db))] == 7
    assert samples[("seawall_group_rpo_seconds", labels(**db))] == 2.5
    assert samples[("seawall_group_newest_checkpoint_timestamp_seconds", labels(**db))] == 1.7e9
    assert samples[("seawall_group_journal_bytes", labels(**db))] == 5000
    assert samples[("seawall_group_info", labels(**app, group_id="g1"))] == 1
    assert samples[("seawall_agent_volumes", labels())] == 3
    # One state is 1, every other known state 0; the recovery role has no state.
    states = {dict(key[1])["state"]: value for key, value in samples.items()
              if key[0] == "seawall_group_state"}
    assert states == {state: float(state == "bitmap-sync") for state in STATES}
    # Not known yet, so absent: no RPO before a durable checkpoint, no journal limit, no
    # throttle; and no group series of the other role's facts.
    names = {(name, dict(pairs)["group"]) for name, pairs in samples if "group" in dict(pairs)}
    assert ("seawall_group_rpo_seconds", "app") not in names
    assert ("seawall_group_journal_limit_bytes", "db") not in names
    assert ("seawall_group_journal_bytes", "app") not in names
    assert ("seawall_agent_throttle_bytes_per_second", labels()) not in samples


def test_manager_view_adds_peers_and_keeps_groups_when_the_agent_is_down() -> None:
    known = [KnownGroup("g1", "app", "protected", "dr"), KnownGroup("g2", "db", "recovery", "dr"),
             KnownGroup("g3", "web", "protected", "dr2")]
    samples = scrape(site_families(SNAPSHOT, known))
    app = labels(group="app", role="protected", peer="dr")
    assert samples[("seawall_group_shipped_bytes_total", app)] == 123456
    info = {dict(key[1])["group"] for key in samples if key[0] == "seawall_group_info"}
    assert info == {"app", "db", "web"}
    down = scrape(site_families(None, known))
    assert {key[0] for key in down} == {"seawall_group_info"}
    assert len(down) == 3


def test_json_log_lines_carry_the_extra_fields() -> None:
    logger = logging.getLogger("seawall.test.json")
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1,
                               "group %s: link lost: %s", ("app", "reset"), None,
                               extra={"group": "app", "peer": "10.0.0.2"})
    try:
        raise OSError("boom")
    except OSError:
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "group app: link lost: reset"
    assert (entry["level"], entry["logger"], entry["process"]) == (
        "WARNING", "seawall.test.json", os.getpid())
    assert (entry["group"], entry["peer"]) == ("app", "10.0.0.2")
    assert entry["time"].endswith("Z") and "T" in entry["time"]
    assert "OSError: boom" in entry["exception"]
    assert "args" not in entry and "msg" not in entry


def test_an_unknown_log_format_is_refused_and_changes_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FORMAT_ENV, raising=False)
    handlers = list(logging.getLogger().handlers)
    with pytest.raises(InvalidInput, match="text or json"):
        setup_logging("xml")
    assert FORMAT_ENV not in os.environ
    assert logging.getLogger().handlers == handlers


def test_a_taken_metrics_port_fails_clearly() -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        with pytest.raises(InvalidInput, match=f"cannot listen for metrics on 127.0.0.1:{port}"):
            bind_tcp("127.0.0.1", port, "metrics")
    finally:
        taken.close()
