"""Metrics and JSON logs of two real sites, scraped while writes go through NBD.

Both sites run with their agents' metrics listeners on (``site init --metrics``) and JSON
logs (``SEAWALL_LOG_FORMAT=json``). The agents' ``/metrics`` and the managers' ``/metrics``
are parsed with prometheus_client's text parser, as Prometheus would read them.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from seawall.config import SiteConfig
from seawall.localsites import LocalSite, free_ports
from support.groups import GROUP, protect, tag, write
from support.sites import kill_agent, stop_for_sure

pytestmark = pytest.mark.e2e

VOLUME_BYTES = 16 << 20
WRITES = 64
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels``."""
    found = [v for (n, pairs), v in samples.items() if n == name and set(labels.items()) <= pairs]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def scrape_agent(site: LocalSite) -> Samples:
    config = site.config
    response = httpx.get(f"http://{config.metrics_host}:{config.metrics_port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


@pytest.fixture
def metered_sites(tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalSite, LocalSite, Path]]:
    monkeypatch.setenv("SEAWALL_LOG_FORMAT", "json")
    log_path = tmp_path / "sites.log"
    log = log_path.open("w")
    sites = []
    for name in ("prod", "dr"):
        api, replication, metrics, peer_api = free_ports(4)
        SiteConfig.create(name, tmp_path / name, f"127.0.0.1:{api}",
                          f"127.0.0.1:{replication}", metrics=f"127.0.0.1:{metrics}",
                          peer_api=f"127.0.0.1:{peer_api}")
        sites.append(LocalSite(name, tmp_path / name, log))
    try:
        for site in sites:
            site.start()
        yield sites[0], sites[1], log_path
    finally:
        for site in sites:
            stop_for_sure(site)
        log.close()


def test_metrics_follow_writes_and_logs_are_json(
        metered_sites: tuple[LocalSite, LocalSite, Path]) -> None:
    prod, dr, log_path = metered_sites
    model = bytearray(VOLUME_BYTES)
    uri = protect(prod, dr, model, count=8)
    app = {"group": GROUP, "volume": "disk0"}
    before = scrape_agent(prod)
    assert value(before, "seawall_group_state", group=GROUP, state="protecting") == 1
    assert value(before, "seawall_group_state", group=GROUP, state="bitmap-sync") == 0
    total = value(before, "seawall_group_sync_total_bytes", group=GROUP)
    assert value(before, "seawall_group_sync_done_bytes", group=GROUP) == total >= VOLUME_BYTES

    # Scrape while the writes go through NBD: counters only ever grow.
    writer = threading.Thread(target=write, args=(uri, model, random.Random(2), WRITES))
    writer.start()
    seen = [value(before, "seawall_volume_written_bytes_total", **app)]
    while writer.is_alive():
        seen.append(value(scrape_agent(prod), "seawall_volume_written_bytes_total", **app))
    writer.join()
    tag(prod, dr, "after-writes")  # everything written is durable at the recovery site now
    after, dr_agent = scrape_agent(prod), scrape_agent(dr)
    seen.append(value(after, "seawall_volume_written_bytes_total", **app))
    assert seen == sorted(seen)

    written = WRITES * 65536
    assert seen[-1] - seen[0] >= written
    writes = (value(after, "seawall_volume_writes_total", **app)
              - value(before, "seawall_volume_writes_total", **app))
    assert writes >= WRITES
    shipped = (value(after, "seawall_group_shipped_bytes_total", group=GROUP)
               - value(before, "seawall_group_shipped_bytes_total", group=GROUP))
    assert shipped >= 0.9 * written  # random data: compression cannot shrink it
    assert value(dr_agent, "seawall_group_received_bytes_total", group=GROUP) >= written
    for samples in (after, dr_agent):
        assert 0 < value(samples, "seawall_group_rpo_seconds", group=GROUP) < 30
        assert value(samples, "seawall_group_link_up", group=GROUP) == 1
    assert value(dr_agent, "seawall_group_journal_bytes", group=GROUP) > 0
    assert value(dr_agent, "seawall_volume_size_bytes", **app) == VOLUME_BYTES
    assert value(after, "seawall_group_buffer_limit_bytes", group=GROUP) > 0
    assert value(after, "process_resident_memory_bytes") > 0

    # The managers: the same facts, labelled with the peer site, and the process basics.
    prod_view, dr_view = parse(prod.api.text("/metrics")), parse(dr.api.text("/metrics"))
    assert value(prod_view, "seawall_agent_up") == value(dr_view, "seawall_agent_up") == 1
    assert value(prod_view, "seawall_site_info", component="manager", site="prod") == 1
    assert value(prod_view, "seawall_volume_written_bytes_total", peer="dr", **app) >= seen[-1]
    assert value(dr_view, "seawall_group_journal_bytes", group=GROUP, peer="prod") > 0
    assert value(dr_view, "process_cpu_seconds_total") > 0

    # An agent gone: the manager still answers, says so, and still lists the group.
    kill_agent(dr)
    dr_view = parse(dr.api.text("/metrics"))
    assert value(dr_view, "seawall_agent_up") == 0
    assert value(dr_view, "seawall_group_info", group=GROUP, role="recovery", peer="prod") == 1
    assert not [key for key in dr_view if key[0] == "seawall_group_journal_bytes"]

    # Every log line of the four processes is a JSON object; the agents' carry the group.
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "process", "message"} <= set(entries[0])
    synced = [e for e in entries if e.get("group") == GROUP and "sync complete" in e["message"]]
    assert synced and synced[0]["logger"] == "seawall.agent.protect.group"
