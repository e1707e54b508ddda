"""A randomized fault-injection campaign against two real sites, checked by a reference model.

    .venv/bin/python -m tests.support.campaign --runs 20 --seed 1 --faults-per-run 6

Each run starts two local sites (``prod`` protects one volume to ``dr``; its replication
goes through a ``FaultProxy`` that ``dr`` advertises as its replication address), a group
with a 1 s checkpoint interval, a writer thread under load, and a timeline follower. Then
it injects a seeded random sequence of faults (``support.faults``: twelve kinds, and
``mid-sync``, a second fault while a sync runs); after each fault and its repair:

1. recovery: the group is ``protecting`` with its link up and its RPO (``rpo_s`` at the
   protected site) under ``RPO_ALERT_S``, and a checkpoint tagged then reaches ``dr``;
2. every checkpoint ``dr`` offers whose content the model knows (every tagged one, and the
   periodic ones the timeline can place) is exported at ``dr`` and read back: its sha256
   must be the model's, else it is a *mismatch*. If the group is still syncing when the
   repair is done, this is also done at once, while the sync runs;
3. *problems*: a checkpoint ``prod`` calls lost is offered by ``dr``, or a lost one comes
   back; ``dr`` offers an id ``prod`` never issued; an offered, known checkpoint is not
   consistent or cannot be exported; ``prod`` calls one replicated that ``dr`` lacks; the
   group did not do what the fault's ``Expectation`` says (resume, or the right sync; lose
   no checkpoint) — unless the group's buffer overflowed meanwhile, which makes any fault a
   bitmap sync that may lose checkpoints, by design.

A run that does not recover in ``RECOVERY_TIMEOUT_S`` fails; its directory (sites' log
included) is kept, as is any run's with a mismatch or problem. Run ``i`` of seed ``s``
draws from ``random.Random(f"{s}:{i}")`` alone, so ``--start-run i --runs 1`` replays it.
The exit status is 0 only with no mismatch, no problem and every run recovered.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from seawall.errors import SeawallError
from seawall.localsites import LocalSite

from .checkpoints import disagreements, export_sha256, listed
from .faultproxy import FaultProxy
from .faults import KINDS, Expectation, FaultInjector
from .sitelog import SiteLog
from .sites import stop_for_sure
from .timeline import TimelineFollower, WriteTimeline
from .workload import GROUP, Writer, protect

RPO_ALERT_S = 30.0
"""The group's RPO alert threshold: the product has no setting for one yet; 30 intervals."""
RECOVERY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Settings:
    volume_bytes: int = 16 << 20
    buffer_bytes: int = 48 << 20
    """Of the protected site. The writer does about 6 MB/s at ``write_pause_s`` here, so a
    stall overflows it after some 7 s, and the link faults (at most 2.5 s) fit in it."""
    write_pause_s: float = 0.01
    checkpoint_interval_s: float = 1.0


@dataclass
class Tally:
    runs: int = 0
    failed_runs: list[str] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    verified: int = 0  # read-backs: a checkpoint still offered is read again after each fault
    distinct: int = 0  # checkpoints read back at least once
    mismatches: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.failed_runs or self.mismatches or self.problems)

    def summary(self) -> str:
        kinds = ", ".join(f"{kind}={self.faults[kind]}" for kind in KINDS if self.faults[kind])
        return (f"runs={self.runs} faults={sum(self.faults.values())} ({kinds}) "
                f"checkpoints_verified={self.verified} ({self.distinct} distinct) "
                f"mismatches={len(self.mismatches)} "
                f"problems={len(self.problems)} failed_runs={len(self.failed_runs)}")


class RunFailed(Exception):
    """The group did not recover from a fault in time."""


@dataclass(frozen=True)
class Live:
    """What a run's faults act on and are checked against."""

    prod: LocalSite
    dr: LocalSite
    injector: FaultInjector
    writer: Writer
    follower: TimelineFollower


def draw_kinds(rng: random.Random, count: int) -> list[str]:
    """``count`` kinds, from a shuffled bag of all kinds refilled when empty."""
    kinds: list[str] = []
    bag: list[str] = []
    while len(kinds) < count:
        if not bag:
            bag = list(KINDS)
            rng.shuffle(bag)
        kinds.append(bag.pop())
    return kinds


class Run:
    """One run: fresh sites, a writer, ``kinds`` faults in order; results into ``tally``."""

    def __init__(self, label: str, rng: random.Random, settings: Settings, directory: Path,
                 tally: Tally, out: TextIO) -> None:
        self.label = label
        self.rng = rng
        self.settings = settings
        self.directory = directory
        self.tally = tally
        self.out = out
        self.log = SiteLog(directory / "sites.log", GROUP, label)
        self.history: list[str] = []
        self.tagged: dict[int, str] = {}
        self.read_back: set[int] = set()
        self.findings = 0  # mismatches and problems of this run
        self.timeline = WriteTimeline(settings.volume_bytes)

    def execute(self, kinds: list[str]) -> None:
        with contextlib.ExitStack() as stack:
            self.directory.mkdir(parents=True)
            log = stack.enter_context(self.log.path.open("a"))
            # The proxy listens first, so that no site picks its port; its target is known
            # once the recovery site exists, before anything connects.
            proxy = stack.enter_context(FaultProxy("127.0.0.1", 0))
            prod = LocalSite("prod", self.directory / "prod", log,
                             buffer_bytes=self.settings.buffer_bytes)
            dr = LocalSite("dr", self.directory / "dr", log,
                           advertise_replication=f"127.0.0.1:{proxy.port}")
            proxy.target_port = dr.config.replication_port
            stack.callback(stop_for_sure, prod)
            stack.callback(stop_for_sure, dr)
            prod.launch()
            dr.launch()
            prod.wait_started()
            dr.wait_started()
            writer = protect(prod, dr, self.rng.randrange(1 << 32),
                             checkpoint_interval_s=self.settings.checkpoint_interval_s,
                             volume_bytes=self.settings.volume_bytes, timeline=self.timeline,
                             write_pause_s=self.settings.write_pause_s)
            assert proxy.connections_accepted >= 1, "replication bypasses the proxy"
            follower = stack.enter_context(
                TimelineFollower(self.timeline, prod.url, GROUP, token=prod.token,
                                 tls=prod.tls))
            stack.enter_context(writer.running())
            injector = FaultInjector(prod, dr, proxy, self.rng, self.log)
            live = Live(prod, dr, injector, writer, follower)
            self.tag(live, "start")  # periodic checkpoints exist too by then: a steady state
            for number, kind in enumerate(kinds, 1):
                self.fault(number, kind, live)
            self.say(f"  {writer.writes} writes ({writer.failures} failed attempts); the "
                     f"timeline placed {len(self.timeline.known)} checkpoints, "
                     f"{len(self.timeline.unknown)} had a write in flight")

    def fault(self, number: int, kind: str, live: Live) -> None:
        lost_before = self.lost(live.prod)
        failures_before = live.writer.failures
        mark = self.log.mark(f"fault {number} {kind} begins")
        detail, expectation = live.injector.inject(kind)
        self.history.append(f"{kind}({detail})")
        self.tally.faults[kind] += 1
        self.log.mark(f"fault {number} {kind} repaired: {detail}")
        state = live.prod.group_status(GROUP)["state"]
        if state != "protecting":  # what is offered must be right while a sync runs, too
            verified, offered = self.verify(live.prod, live.dr, live.follower)
            detail += f"; verified {verified} of {offered} offered while {state}"
        recover_s, rpo_peak_s = self.recover(live.prod)
        self.tag(live, f"after-{number}-{kind}")
        lost_after = self.lost(live.prod)
        newly_lost = lost_after - lost_before
        if lost_before - lost_after:
            self.problem(f"lost checkpoints came back: {sorted(lost_before - lost_after)}")
        syncs, overflowed = self.log.syncs(mark), self.log.overflows(mark) > 0
        if expectation is not None and kind != "overflow" and overflowed:
            detail += "; the buffer overflowed"
        elif expectation is not None:
            self.expect(kind, expectation, syncs, newly_lost)
        if (expectation is not None and not expectation.writes_fail
                and live.writer.failures > failures_before):
            self.problem(f"{kind} failed {live.writer.failures - failures_before} NBD writes")
        verified, offered = self.verify(live.prod, live.dr, live.follower)
        self.say(f"  fault {number} {kind}: {detail}; RPO under {RPO_ALERT_S:.0f} s "
                 f"{recover_s:.1f} s after the repair (peak since {rpo_peak_s:.1f} s), "
                 f"{len(newly_lost)} lost, syncs {syncs or 'none'}, "
                 f"verified {verified} of {offered} offered")

    def tag(self, live: Live, name: str) -> None:
        """Tag a checkpoint and wait until the recovery site offers it."""
        checkpoint, sha256 = live.writer.checkpoint(live.prod, name, timeout_s=60)
        self.tagged[checkpoint] = sha256
        live.dr.wait_checkpoint(GROUP, checkpoint, timeout_s=60)

    def lost(self, prod: LocalSite) -> set[int]:
        return {int(c["id"]) for c in prod.api.get(f"/api/v1/groups/{GROUP}/checkpoints")
                if c["lost"]}

    def recover(self, prod: LocalSite) -> tuple[float, float]:
        """Wait until protecting, link up, RPO under the threshold; (seconds, RPO peak)."""
        started = time.monotonic()
        rpo_peak_s = 0.0
        status: dict[str, Any] | None = None
        while time.monotonic() - started < RECOVERY_TIMEOUT_S:
            try:
                status = prod.group_status(GROUP)
            except SeawallError:
                status = None
            if status is not None and status["rpo_s"] is not None:
                rpo_peak_s = max(rpo_peak_s, status["rpo_s"])
                if (status["state"] == "protecting" and status["link_up"]
                        and status["rpo_s"] < RPO_ALERT_S):
                    return time.monotonic() - started, rpo_peak_s
            time.sleep(0.1)
        raise RunFailed(f"not protecting with RPO < {RPO_ALERT_S:.0f} s after "
                        f"{RECOVERY_TIMEOUT_S:.0f} s; last status {status}")

    def expect(self, kind: str, expectation: Expectation, syncs: list[str],
               newly_lost: set[int]) -> None:
        if expectation.lossless and newly_lost:
            self.problem(f"{kind} lost checkpoints {sorted(newly_lost)}")
        if expectation.sync is None and syncs:
            self.problem(f"{kind} did not resume: syncs {syncs}")
        if expectation.sync is not None and expectation.sync not in syncs:
            self.problem(f"{kind} caused syncs {syncs}, not a {expectation.sync} sync")

    def verify(self, prod: LocalSite, dr: LocalSite,
               follower: TimelineFollower) -> tuple[int, int]:
        """Check every checkpoint ``dr`` offers against the model; (read back, offered)."""
        at_dr = listed(dr)  # first: then every id it offers was issued before prod's listing
        at_prod = {int(c["id"]): c for c in follower.catch_up()}
        for checkpoint, sha256 in self.tagged.items():  # the model against itself
            assert self.timeline.known.get(checkpoint) == sha256, (
                f"the timeline disagrees with the model at tagged checkpoint {checkpoint}")
        lost_offered = {c for c, info in at_prod.items() if info["lost"]} & at_dr.keys()
        if lost_offered:
            self.problem(f"dr offers checkpoints prod calls lost: {sorted(lost_offered)}")
        strangers = at_dr.keys() - at_prod.keys()
        if strangers:
            self.problem(f"dr offers ids prod never issued: {sorted(strangers)}")
        for disagreement in disagreements(prod, dr):
            self.problem(disagreement)
        verified = 0
        for checkpoint, info in sorted(at_dr.items()):
            expected = self.timeline.known.get(checkpoint)
            if expected is None:
                continue
            if not info["consistent"]:
                self.problem(f"checkpoint {checkpoint} is offered but not consistent: {info}")
                continue
            try:
                got = export_sha256(dr, checkpoint, self.settings.volume_bytes)
            except SeawallError as exc:
                self.problem(f"checkpoint {checkpoint} cannot be exported: {exc}")
                continue
            verified += 1
            if checkpoint not in self.read_back:
                self.read_back.add(checkpoint)
                self.tally.distinct += 1
            if got != expected:
                self.mismatch(checkpoint, info, expected, got)
        self.tally.verified += verified
        return verified, len(at_dr)

    def mismatch(self, checkpoint: int, info: dict[str, Any], expected: str, got: str) -> None:
        text = (f"{self.label}: checkpoint {checkpoint} (name {info['name']!r}, time_ns "
                f"{info['time_ns']}) reads back {got[:16]}, the model says {expected[:16]}; "
                f"after faults {' '.join(self.history)}")
        self.tally.mismatches.append(text)
        self.findings += 1
        self.log.mark(f"MISMATCH {text}")
        self.say(f"  MISMATCH {text}")

    def problem(self, text: str) -> None:
        text = f"{self.label}: {text}; after faults {' '.join(self.history)}"
        self.tally.problems.append(text)
        self.findings += 1
        self.log.mark(f"PROBLEM {text}")
        self.say(f"  PROBLEM {text}")

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def campaign(runs: int, seed: int, faults_per_run: int, base_dir: Path, *,
             start_run: int = 1, kinds: list[str] | None = None, keep: bool = False,
             settings: Settings | None = None, out: TextIO = sys.stdout) -> Tally:
    """Run ``runs`` runs; ``kinds`` fixes every run's fault sequence (else drawn)."""
    settings = settings or Settings()
    tally = Tally()
    for index in range(start_run, start_run + runs):
        rng = random.Random(f"{seed}:{index}")
        run_kinds = kinds if kinds is not None else draw_kinds(rng, faults_per_run)
        label = f"run {index} (seed {seed})"
        directory = base_dir / f"run-{index:03d}"
        print(f"{label}: {' '.join(run_kinds)} in {directory}", file=out, flush=True)
        started = time.monotonic()
        run = Run(label, rng, settings, directory, tally, out)
        clean = True
        try:
            run.execute(run_kinds)
        except Exception as exc:  # the run failed, whatever broke: the next one goes on
            clean = False
            tally.failed_runs.append(f"{label}: {type(exc).__name__}: {exc}; after faults "
                                     f"{' '.join(run.history)}")
            print(f"  FAILED {tally.failed_runs[-1]}\n{traceback.format_exc()}", file=out,
                  flush=True)
        tally.runs += 1
        clean = clean and not run.findings
        verdict = "ok" if clean else f"NOT OK (kept: {directory})"
        print(f"{label}: {verdict} in {time.monotonic() - started:.0f} s; {tally.summary()}",
              file=out, flush=True)
        if clean and not keep:
            shutil.rmtree(directory, ignore_errors=True)
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     prog="python -m tests.support.campaign")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults-per-run", type=int, default=6)
    parser.add_argument("--start-run", type=int, default=1, help="index of the first run")
    parser.add_argument("--kinds", help=f"comma-separated fault sequence for every run, of: "
                                        f"{','.join(KINDS)}")
    parser.add_argument("--dir", type=Path, help="where runs keep their sites (default: a "
                                                 "new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the sites of clean runs")
    args = parser.parse_args(argv)
    kinds = args.kinds.split(",") if args.kinds else None
    if kinds is not None and set(kinds) - set(KINDS):
        parser.error(f"unknown fault kinds: {sorted(set(kinds) - set(KINDS))}")
    base_dir = args.dir or Path(tempfile.mkdtemp(prefix="seawall-campaign-"))
    started = time.monotonic()
    tally = campaign(args.runs, args.seed, args.faults_per_run, base_dir,
                     start_run=args.start_run, kinds=kinds, keep=args.keep)
    for line in tally.failed_runs + tally.mismatches + tally.problems:
        print(line)
    print(f"{tally.summary()} wall_s={time.monotonic() - started:.0f}")
    if tally.ok and not args.keep and args.dir is None:
        shutil.rmtree(base_dir, ignore_errors=True)
    return 0 if tally.ok else 1


if __name__ == "__main__":
    sys.exit(main())
