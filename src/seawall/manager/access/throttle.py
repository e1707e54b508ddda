"""LoginThrottle: how long a password login must wait, from the failures before it (pure).

Without it 30 wrong passwords took 4.4 s, with no backoff and no lockout.

Rules:
- Failures are counted per key, a key being a user name or a source address (``user:``,
  ``source:``), over a sliding window (``window_s``); older ones no longer count.
- A key's first ``free_failures`` failures cost nothing; once it has ``free_failures + n``
  (n >= 0), the next attempt must wait ``base_wait_s * 2**n`` (1, 2, 4, ... s) after the
  last one, at most ``max_wait_s``. An attempt waits for the longest of its keys
  (``wait_s``); one that must wait is refused without checking the password (the caller
  answers 429 with Retry-After), so a guesser pays the delays and the server does not.
- An attempt counts as a failure from when it starts (``begin``), so parallel guesses are
  counted before their checks end; a success (``succeeded``) forgets the user's failures,
  not the source's (one account of one's own must not buy guesses at another's).
- Per-user waits let anyone delay a user's password logins by at most ``max_wait_s`` at a
  time; API tokens are not touched, and whoever holds the data directory gets an admin
  token without a password (``seawall site admin-token``).
- At most ``max_keys`` keys are kept: past it, the keys failed least recently are
  forgotten first, so memory stays bounded whatever names and addresses are tried.
- Pure: the caller passes the time (monotonic seconds).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

WINDOW_S = 900.0
USER_FREE_FAILURES = 5
SOURCE_FREE_FAILURES = 20  # a source may be shared: a host's local users, a NAT
BASE_WAIT_S = 1.0
MAX_WAIT_S = 300.0
MAX_KEYS = 10000


@dataclass(frozen=True)
class ThrottlePolicy:
    window_s: float = WINDOW_S
    user_free_failures: int = USER_FREE_FAILURES
    source_free_failures: int = SOURCE_FREE_FAILURES
    base_wait_s: float = BASE_WAIT_S
    max_wait_s: float = MAX_WAIT_S
    max_keys: int = MAX_KEYS


def user_key(name: str) -> str:
    return f"user:{name}"


def source_key(address: str) -> str:
    return f"source:{address}"


class LoginThrottle:
    def __init__(self, policy: ThrottlePolicy | None = None) -> None:
        self.policy = policy or ThrottlePolicy()
        self._failures: dict[str, deque[float]] = {}  # key -> times, oldest first

    def wait_s(self, user: str, source: str, now_s: float) -> float:
        """How long an attempt at ``now_s`` must still wait (0: it may go ahead)."""
        return max(self._key_wait_s(user_key(user), self.policy.user_free_failures, now_s),
                   self._key_wait_s(source_key(source), self.policy.source_free_failures,
                                    now_s))

    def begin(self, user: str, source: str, now_s: float) -> None:
        """An attempt starts: counted as a failure until it ``succeeded``."""
        for key in (user_key(user), source_key(source)):
            self._failures.setdefault(key, deque()).append(now_s)
            self._failures[key] = self._failures.pop(key)  # most recent last, for eviction
        self._bound()

    def succeeded(self, user: str) -> None:
        self._failures.pop(user_key(user), None)

    def _key_wait_s(self, key: str, free_failures: int, now_s: float) -> float:
        times = self._failures.get(key)
        if not times:
            return 0.0
        while times and times[0] <= now_s - self.policy.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0.0
        past_free = len(times) - free_failures
        if past_free < 0:
            return 0.0
        wait_s = min(self.policy.base_wait_s * 2.0 ** past_free, self.policy.max_wait_s)
        return max(times[-1] + wait_s - now_s, 0.0)

    def _bound(self) -> None:
        while len(self._failures) > self.policy.max_keys:
            del self._failures[next(iter(self._failures))]  # the one failed least recently
