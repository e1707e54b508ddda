"""A short run of the fault campaign (``support.campaign``): one run, four kinds of fault.

The kinds are fixed (a link fault, both ends' worst days, an overflow) and the seed too, so
the run is the same each time; ``python -m tests.support.campaign`` runs the long,
randomized version. Every checkpoint the recovery site offers and the model knows is read
back after each fault; the test fails on any mismatch, problem or run that did not recover.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from support.campaign import campaign

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

KINDS = ["corrupt", "kill-protected", "torn-tail", "overflow"]


def test_short_campaign_recovers_and_every_checkpoint_reads_back(tmp_path: Path) -> None:
    tally = campaign(1, seed=7, faults_per_run=len(KINDS), base_dir=tmp_path, kinds=KINDS,
                     out=sys.stdout)
    assert not tally.failed_runs, tally.failed_runs
    assert not tally.mismatches, tally.mismatches
    assert not tally.problems, tally.problems
    assert tally.faults == Counter(KINDS)
    # Each fault ends with a tag the recovery site offers: at least that one is read back.
    assert tally.verified >= len(KINDS)
