"""HistoryService: every group's RPO, throughput, IOPS and journal use over time.

The monitor hands each round's status documents to ``record`` (a ``Monitor`` follower);
``history_policy`` decides which bucket of each tier a sample folds into and when a
bucket expires; this module only reads and writes the ``history_buckets`` rows.

Rules:
- One transaction per round: every group's buckets are folded, expired buckets and the
  buckets of groups this site no longer has are deleted, then it commits. A round whose
  transaction fails loses that round's samples only (the monitor logs it and goes on).
- Each site records what it sees of a group (its half of the status document: the
  protected site its write and send rates, the recovery site its receive rate and
  journal); both record the RPO.
- ``history`` answers a range from the finest tier that covers it, oldest point first.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from seawall.errors import NotFound
from seawall.manager.models import Group, HistoryBucket
from seawall.manager.monitoring.history_policy import (
    METRICS,
    RANGES_S,
    TIERS,
    Bucket,
    bucket_start,
    expired,
    sample_of,
    tier_for,
)


class HistoryService:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def record(self, documents: list[dict[str, Any]]) -> None:
        """A monitor round's samples, at the present time."""
        self.record_at(documents, time.time())

    def record_at(self, documents: list[dict[str, Any]], now_s: float) -> None:
        with self.sessions.begin() as session:
            for document in documents:
                sample = sample_of(document)
                for tier in TIERS:
                    self._fold(session, document["group_id"], tier.resolution_s, now_s,
                               sample)
            for tier in TIERS:
                session.execute(delete(HistoryBucket).where(
                    HistoryBucket.resolution_s == tier.resolution_s,
                    HistoryBucket.start_s < expired(tier, now_s)))
            session.execute(delete(HistoryBucket).where(HistoryBucket.group_id.not_in(
                [d["group_id"] for d in documents])))

    @staticmethod
    def _fold(session: Session, group_id: str, resolution_s: int, now_s: float,
              sample: dict[str, float | None]) -> None:
        start_s = bucket_start(now_s, resolution_s)
        row = session.get(HistoryBucket, (group_id, resolution_s, start_s))
        bucket = Bucket(start_s, resolution_s)
        if row is not None:
            bucket.samples = row.samples
            bucket.folds = {name: (float(fold), int(known))
                            for name, (fold, known) in row.folds.items()}
        bucket.add(sample)
        folds = {name: [fold, known] for name, (fold, known) in bucket.folds.items()}
        if row is None:
            session.add(HistoryBucket(group_id=group_id, resolution_s=resolution_s,
                                      start_s=start_s, samples=bucket.samples, folds=folds))
        else:
            row.samples, row.folds = bucket.samples, folds

    def history(self, name: str, range_name: str, now_s: float | None = None) -> dict[str, Any]:
        """A group's points over ``range_name`` (``1h``, ``24h``, ``7d``, ``30d``)."""
        tier = tier_for(range_name)
        since_s = (time.time() if now_s is None else now_s) - RANGES_S[range_name]
        with self.sessions() as session:
            group_id = session.scalars(select(Group.group_id).where(Group.name == name)).first()
            if group_id is None:
                raise NotFound(f"no group named {name!r}")
            rows = session.scalars(select(HistoryBucket).where(
                HistoryBucket.group_id == group_id,
                HistoryBucket.resolution_s == tier.resolution_s,
                HistoryBucket.start_s >= bucket_start(since_s, tier.resolution_s))
                .order_by(HistoryBucket.start_s)).all()
            points = []
            for row in rows:
                bucket = Bucket(row.start_s, row.resolution_s, row.samples,
                                {k: (float(f), int(n)) for k, (f, n) in row.folds.items()})
                points.append(bucket.point())
        return {"group": name, "range": range_name, "resolution_s": tier.resolution_s,
                "metrics": list(METRICS), "points": points}
