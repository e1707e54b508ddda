"""SessionRetry: when the shipper reconnects, and when it only probes (pure core)."""

from __future__ import annotations

from seawall.wan.retry import FULL_MAX_S, LINK_MAX_S, SessionRetry


def test_a_full_journal_backs_off_to_half_a_minute_even_when_sessions_are_welcomed() -> None:
    retry = SessionRetry()
    delays = []
    for _ in range(9):
        retry.started()  # a full journal may welcome the session, then refuse its frame
        delays.append(retry.ended(journal_full=True))
        assert retry.probing
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, FULL_MAX_S, FULL_MAX_S, FULL_MAX_S]
    assert sum(delays[:4]) == 7.5  # four sessions in the first ~10 s, not fifty


def test_an_ack_ends_the_probe_and_resets_the_full_backoff() -> None:
    retry = SessionRetry()
    retry.ended(journal_full=True)
    retry.ended(journal_full=True)
    retry.acknowledged()
    assert not retry.probing
    assert retry.ended(journal_full=True) == 0.5


def test_link_failures_keep_their_own_schedule_and_the_probe() -> None:
    retry = SessionRetry()
    retry.ended(journal_full=True)
    assert [retry.ended(journal_full=False) for _ in range(8)] == [
        0.2, 0.4, 0.8, 1.6, 3.2, 6.4, LINK_MAX_S, LINK_MAX_S]
    assert retry.probing  # the journal was full when last heard of
    retry.started()  # a good session: the next link loss is retried quickly
    assert retry.ended(journal_full=False) == 0.2
    assert retry.ended(journal_full=True) == 1.0  # the full schedule went on
