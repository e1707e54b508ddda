"""Prometheus metrics of a site, built from a *snapshot* of its agent: plain data in, families out.

Rules and invariants:
- Pure: ``site_families`` takes the snapshot the agent reads from its live objects
  (``seawall.agent.metrics.snapshot``; the manager gets the same one as JSON over the
  agent's control socket) and returns metric families. No I/O, no clock, no state: metrics
  are collected on scrape only, nothing runs between scrapes, and the write path does no
  work for them beyond the counters it already keeps.
- Counters are for what Prometheus takes rates of (``rate(seawall_volume_writes_total[1m])``
  is IOPS, ``rate(seawall_group_shipped_bytes_total[1m])`` throughput); gauges are levels.
  Nothing here computes a rate. Counters restart from 0 with the agent (Prometheus's
  ``rate`` handles resets).
- Every group series is labelled ``group`` and ``role`` (protected|recovery); given the
  manager's view of the groups (``known``), also ``peer``. Volume series add ``volume``.
- A fact not known yet (the RPO before the first durable checkpoint, the limit of a journal
  without one) is absent, never a made-up 0. Every family is always declared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from seawall import __version__

STATES = ("initial-sync", "protecting", "bitmap-sync", "delta-sync", "paused", "error")
"""States of a group at its protected site (``seawall_group_state``; see the README)."""

_GROUP_GAUGES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    # name, status keys (the first present one), help
    ("seawall_group_rpo_seconds", ("rpo_s",),
     "Now minus the time of the newest checkpoint durable at the recovery site."),
    ("seawall_group_newest_checkpoint_timestamp_seconds",
     ("newest_replicated_checkpoint_ns", "newest_checkpoint_ns"),
     "Time of the newest checkpoint durable at the recovery site (Unix seconds)."),
    ("seawall_group_link_up", ("link_up", "connected"),
     "1 while a replication session of the group is up."),
    ("seawall_group_durable_seq", ("acked_seq", "durable_seq"),
     "Sequence number of the group's stream durable at the recovery site."),
    ("seawall_group_buffer_bytes", ("buffered_bytes",),
     "Captured writes held in memory until the recovery site has them."),
    ("seawall_group_buffer_limit_bytes", ("buffer_limit_bytes",),
     "The group's share of the agent's buffer."),
    ("seawall_group_buffer_records", ("buffered_records",), "Records in the buffer."),
    ("seawall_group_dirty_bytes", ("dirty_bytes",),
     "Bytes a sync still has to read: dirty ranges and areas left to compare."),
    ("seawall_group_dirty_map_bytes", ("dirty_map_bytes",), "Memory of the dirty maps."),
    ("seawall_group_sync_total_bytes", ("sync.total_bytes",),
     "Size of the current (or last) sync."),
    ("seawall_group_sync_done_bytes", ("sync.done_bytes",),
     "Bytes the current (or last) sync has read and compared or shipped."),
    ("seawall_group_journal_bytes", ("journal_bytes",), "Size of the journal on disk."),
    ("seawall_group_journal_limit_bytes", ("journal_max_bytes",),
     "Hard limit of the journal (absent: none)."),
    ("seawall_group_journal_segments", ("journal_segments",), "Segment files of the journal."),
    ("seawall_group_journal_warning", ("journal_warning",),
     "1 when the journal is at 75% of its hard limit or more."),
    ("seawall_group_journal_full", ("journal_full",),
     "1 while the journal's filesystem is full."),
    ("seawall_group_history_target_seconds", ("history_target_s",),
     "Journal history the group should cover."),
    ("seawall_group_history_covered_seconds", ("history_covered_s",),
     "Age of the oldest checkpoint still offered."),
)

_GROUP_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("seawall_group_shipped_bytes", "wan.sent_bytes",
     "Replication bytes sent to the recovery site (frames, after compression)."),
    ("seawall_group_received_bytes", "received_bytes",
     "Replication bytes received into the journal (frames, as sent)."),
    ("seawall_group_buffer_overflows", "overflows",
     "Times the buffer filled up and the group turned to tracking dirty ranges."),
    ("seawall_group_retention_applied_bytes", "applied_bytes",
     "Journal bytes applied to the replicas by retention."),
)

_VOLUME_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("seawall_volume_written_bytes", "written_bytes",
     "Bytes written (and zeroed or trimmed) at the protected front end."),
    ("seawall_volume_writes", "write_count",
     "Write, zero and trim requests at the protected front end."),
)

_AGENT_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("seawall_agent_buffer_limit_bytes", "buffer_bytes",
     "Memory for unsent writes, shared by the agent's protected groups."),
    ("seawall_agent_throttle_bytes_per_second", "throttle_bytes_per_s",
     "Replication bandwidth limit in force (absent: unlimited)."),
    ("seawall_agent_volumes", "volumes", "Volumes served by the agent."),
    ("seawall_agent_exports", "exports", "Read-only checkpoint exports open."),
)


@dataclass(frozen=True)
class KnownGroup:
    """A group as the site manager's database has it."""

    group_id: str
    name: str
    role: str
    peer: str


def _lookup(status: Mapping[str, Any], dotted: str) -> Any:
    value: Any = status
    for key in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _number(value: Any) -> float | None:
    """A sample value, or None for a fact not known (None) or not a number."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def _seconds_if_ns(key: str, value: float | None) -> float | None:
    """Status times are in ns (``*_ns``); Prometheus takes seconds."""
    return value / 1e9 if value is not None and key.endswith("_ns") else value


class _Builder:
    """Declares every family up front; samples are added as the snapshot has them."""

    def __init__(self, known: Sequence[KnownGroup] | None) -> None:
        self.peers = None if known is None else {g.group_id: g.peer for g in known}
        labels = ["group", "role"] + ([] if known is None else ["peer"])
        self.group_labels = labels
        self.gauges = {name: GaugeMetricFamily(name, doc, labels=labels)
                       for name, _, doc in _GROUP_GAUGES}
        self.counters = {name: CounterMetricFamily(name, doc, labels=labels)
                         for name, _, doc in _GROUP_COUNTERS}
        self.state = GaugeMetricFamily(
            "seawall_group_state", "1 for the state the group is in at its protected site, "
            "0 for the others.", labels=[*labels, "state"])
        self.info = GaugeMetricFamily("seawall_group_info", "Groups of the site (always 1).",
                                      labels=[*labels, "group_id"])
        volume_labels = [*labels, "volume"]
        self.volume_size = GaugeMetricFamily("seawall_volume_size_bytes", "Size of a volume.",
                                             labels=volume_labels)
        self.volume_counters = {name: CounterMetricFamily(name, doc, labels=volume_labels)
                                for name, _, doc in _VOLUME_COUNTERS}

    def labels(self, group_id: str, name: str, role: str) -> list[str]:
        if self.peers is None:
            return [name, role]
        return [name, role, self.peers.get(group_id, "")]

    def add_group(self, status: Mapping[str, Any]) -> None:
        labels = self.labels(str(status["group_id"]), str(status["name"]), str(status["role"]))
        for name, keys, _ in _GROUP_GAUGES:
            value = next((v for v in (_seconds_if_ns(k, _number(_lookup(status, k)))
                                      for k in keys) if v is not None), None)
            if value is not None:
                self.gauges[name].add_metric(labels, value)
        for name, key, _ in _GROUP_COUNTERS:
            value = _number(_lookup(status, key))
            if value is not None:
                self.counters[name].add_metric(labels, value)
        state = status.get("state")
        if isinstance(state, str):
            for candidate in (*STATES, *([] if state in STATES else [state])):
                self.state.add_metric([*labels, candidate], 1.0 if candidate == state else 0.0)
        for volume in status.get("volumes", []):
            volume_labels = [*labels, str(volume["name"])]
            self.volume_size.add_metric(volume_labels, float(volume["size_bytes"]))
            for name, key, _ in _VOLUME_COUNTERS:
                value = _number(volume.get(key))
                if value is not None:
                    self.volume_counters[name].add_metric(volume_labels, value)

    def families(self) -> Iterable[Metric]:
        yield self.info
        yield self.state
        yield from self.gauges.values()
        yield from self.counters.values()
        yield self.volume_size
        yield from self.volume_counters.values()


def site_families(snapshot: Mapping[str, Any] | None,
                  known: Sequence[KnownGroup] | None = None) -> list[Metric]:
    """The families of a site's agent ``snapshot`` (None: the agent did not answer).

    ``known`` is the manager's list of groups: each gets ``seawall_group_info`` even when
    its agent is down, and every group series gets a ``peer`` label.
    """
    builder = _Builder(known)
    groups: list[Mapping[str, Any]] = list(snapshot["groups"]) if snapshot else []
    for status in groups:
        builder.add_group(status)
        if known is None:
            labels = builder.labels(status["group_id"], status["name"], status["role"])
            builder.info.add_metric([*labels, status["group_id"]], 1.0)
    for group in known or ():
        # The database's groups, whether or not the agent answered or knows them.
        labels = builder.labels(group.group_id, group.name, group.role)
        builder.info.add_metric([*labels, group.group_id], 1.0)
    agent_families = []
    for name, key, doc in _AGENT_GAUGES:
        family = GaugeMetricFamily(name, doc)
        value = _number(snapshot["agent"].get(key)) if snapshot else None
        if value is not None:
            family.add_metric([], value)
        agent_families.append(family)
    return [*builder.families(), *agent_families]


def site_info(site: str, site_id: str, component: str) -> Metric:
    """``seawall_site_info``: which site and version a process (agent|manager) belongs to."""
    family = InfoMetricFamily("seawall_site", "The site this process belongs to.")
    family.add_metric([], {"site": site, "site_id": site_id, "component": component,
                           "version": __version__})
    return family
