"""Group history: the downsampling policy fed samples, and the service over a real SQLite.

The policy (``history_policy``) is fed samples by hand: buckets fold the worst RPO and the
mean of the rest, unknown values leave gaps, tiers expire at their span, a range reads the
finest tier covering it. The service (``HistoryService``) is then run over weeks of
simulated rounds, on an in-memory SQLite, to show the table stays bounded.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from seawall.cli.history import history_rows
from seawall.errors import InvalidInput, NotFound
from seawall.manager.models import Group, HistoryBucket, Peer, create_database
from seawall.manager.monitoring.history import HistoryService
from seawall.manager.monitoring.history_policy import (
    TIERS,
    Bucket,
    bucket_start,
    expired,
    sample_of,
    tier_for,
)

T0_S = 1_800_000_000  # a multiple of 3600: bucket starts are easy to read


def test_a_bucket_keeps_the_worst_rpo_and_the_mean_of_rates() -> None:
    bucket = Bucket(T0_S, 5)
    bucket.add({"rpo_s": 2.0, "write_bytes_per_s": 100.0, "iops": 10.0})
    bucket.add({"rpo_s": 7.5, "write_bytes_per_s": 300.0, "iops": None})
    bucket.add({"rpo_s": 1.0, "write_bytes_per_s": None})
    assert bucket.samples == 3
    assert bucket.value("rpo_s") == 7.5
    assert bucket.value("write_bytes_per_s") == 200.0  # unknowns are left out, not zeros
    assert bucket.value("iops") == 10.0
    assert bucket.value("journal_ratio") is None  # never known: a gap
    point = bucket.point()
    assert point["t"] == T0_S and point["rpo_s"] == 7.5 and point["sent_bytes_per_s"] is None


def test_a_first_rpo_of_zero_is_the_max_until_a_worse_one() -> None:
    bucket = Bucket(T0_S, 5)
    bucket.add({"rpo_s": 0.0})
    assert bucket.value("rpo_s") == 0.0
    bucket.add({"rpo_s": float("nan")})  # not a number: ignored
    bucket.add({"rpo_s": 0.5})
    assert bucket.value("rpo_s") == 0.5


def test_buckets_start_at_multiples_and_expire_at_their_span() -> None:
    assert bucket_start(T0_S + 4.9, 5) == T0_S
    assert bucket_start(T0_S + 5.0, 5) == T0_S + 5
    assert bucket_start(T0_S + 3599, 3600) == T0_S
    fine, minute, hour = TIERS
    assert (fine.resolution_s, fine.span_s) == (5, 3600)
    assert (minute.resolution_s, minute.span_s) == (60, 86400)
    assert (hour.resolution_s, hour.span_s) == (3600, 30 * 86400)
    now_s = T0_S + 7200
    assert expired(fine, now_s) == T0_S + 3600  # the bucket starting an hour ago stays
    assert expired(hour, now_s) == T0_S + 7200 - 30 * 86400


def test_a_range_reads_the_finest_tier_that_covers_it() -> None:
    assert tier_for("1h").resolution_s == 5
    assert tier_for("24h").resolution_s == 60
    assert tier_for("7d").resolution_s == 3600
    assert tier_for("30d").resolution_s == 3600
    with pytest.raises(InvalidInput, match="range must be one of 1h, 24h, 7d, 30d, not '2h'"):
        tier_for("2h")


def test_a_sample_is_taken_from_either_sites_status_document() -> None:
    protected = {"rpo_s": 1.5, "iops": 20, "journal": None,
                 "throughput": {"write_bytes_per_s": 4096, "sent_bytes_per_s": 2048.0,
                                "received_bytes_per_s": None}}
    assert sample_of(protected) == {
        "rpo_s": 1.5, "write_bytes_per_s": 4096.0, "sent_bytes_per_s": 2048.0,
        "received_bytes_per_s": None, "iops": 20.0, "journal_used_bytes": None,
        "journal_ratio": None}
    recovery = {"rpo_s": None, "iops": None, "journal": {"used_bytes": 1 << 20, "ratio": 0.25},
                "throughput": {"received_bytes_per_s": 512.0}}
    taken = sample_of(recovery)
    assert taken["journal_used_bytes"] == 1 << 20 and taken["journal_ratio"] == 0.25
    assert taken["received_bytes_per_s"] == 512.0 and taken["rpo_s"] is None


def _service() -> tuple[HistoryService, str]:
    _engine, sessions = create_database("sqlite://")  # in memory: rounds without fsyncs
    group_id = str(uuid.uuid4())
    with sessions.begin() as session:
        peer = Peer(site_id=str(uuid.uuid4()), name="dr", api_url="https://dr",
                    replication_host="dr", replication_port=1, paired_at=datetime.now(UTC))
        session.add(peer)
        session.flush()
        session.add(Group(group_id=group_id, name="app", role="protected",
                          peer_site_id=peer.site_id, checkpoint_interval_s=5.0,
                          history_s=3600.0, created_at=datetime.now(UTC), volumes=[]))
    return HistoryService(sessions), group_id


def _document(group_id: str, rpo_s: float | None) -> dict[str, object]:
    return {"group_id": group_id, "rpo_s": rpo_s, "iops": 3.0, "journal": None,
            "throughput": {"write_bytes_per_s": 1000.0}}


def test_the_service_folds_rounds_and_answers_ranges() -> None:
    service, group_id = _service()
    for offset_s, rpo_s in ((0.0, 1.0), (2.0, 4.0), (6.0, None), (61.0, 2.0)):
        service.record_at([_document(group_id, rpo_s)], T0_S + offset_s)
    hour = service.history("app", "1h", now_s=T0_S + 62)
    assert hour["resolution_s"] == 5
    assert [(p["t"], p["rpo_s"]) for p in hour["points"]] == [
        (T0_S, 4.0), (T0_S + 5, None), (T0_S + 60, 2.0)]
    day = service.history("app", "24h", now_s=T0_S + 62)
    assert [(p["t"], p["rpo_s"], p["iops"]) for p in day["points"]] == [
        (T0_S, 4.0, 3.0), (T0_S + 60, 2.0, 3.0)]
    with pytest.raises(NotFound, match="no group named 'nosuch'"):
        service.history("nosuch", "1h")
    with pytest.raises(InvalidInput):
        service.history("app", "1y")


def test_every_tier_stays_bounded_however_long_it_runs() -> None:
    """Rounds every 10 s for 75 min, then every 10 min for a day and a half, then every
    6 h for 40 days (simulated times): each tier holds only its span; a deleted group's
    rows go with the next round."""
    service, group_id = _service()
    steps = ((10, 75 * 60), (600, 36 * 3600), (6 * 3600, 40 * 86400))
    t_s = T0_S
    for step_s, length_s in steps:
        for round_s in range(t_s, t_s + length_s, step_s):
            service.record_at([_document(group_id, 1.0)], round_s)
            if step_s == 10 and round_s == T0_S + 75 * 60 - 10:
                assert _counts(service)[5] == 3600 // 10 + 1  # an hour, no more
        t_s = round_s + step_s
    # the last hour, day and 30 days of rounds 6 h apart: 1, 5 and 121 buckets
    assert _counts(service) == {5: 1, 60: 24 // 6 + 1, 3600: 30 * 4 + 1}
    last_round_s = t_s - 6 * 3600
    assert len(service.history("app", "30d", now_s=last_round_s)["points"]) == 30 * 4 + 1
    service.record_at([], t_s)  # the group is gone from this site
    assert _counts(service) == {}


def _counts(service: HistoryService) -> dict[int, int]:
    with service.sessions() as session:
        return {resolution_s: count for resolution_s, count in session.execute(
            select(HistoryBucket.resolution_s, func.count())
            .group_by(HistoryBucket.resolution_s)).all()}


def test_the_cli_prints_points_with_units_and_gaps() -> None:
    point = {"t": T0_S, "rpo_s": 2.25, "write_bytes_per_s": 2048.0, "sent_bytes_per_s": None,
             "received_bytes_per_s": None, "iops": 12.4, "journal_used_bytes": 1 << 20,
             "journal_ratio": 0.5}
    assert history_rows([point]) == [{
        "time": "2027-01-15 08:00:00", "rpo": "2.2 s", "writes": "2.0 KiB/s", "sent": "-",
        "received": "-", "iops": "12", "journal": "1.0 MiB (50%)"}]
