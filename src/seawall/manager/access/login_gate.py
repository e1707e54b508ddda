"""LoginGate: password logins, throttled, checked on a small pool of their own threads.

Rules:
- Before a password is checked the throttle (``throttle.LoginThrottle``, per user name and
  per source address) may refuse the attempt: 429 with Retry-After, at once, no hashing.
- Password checks (argon2: ~0.25 s of CPU and 64 MiB each, on purpose) run on
  ``VERIFY_WORKERS`` threads of their own, never on the event loop nor on the pool that
  serves the other routes; at most ``VERIFY_QUEUE_MAX`` attempts wait for them, and one
  more is refused (429, retry in 1 s) rather than queued. So a flood of logins costs at
  most one core, a bounded memory, and never delays ``/health`` or the peer API (60
  parallel wrong logins used to stall ``/health`` 5.3 s and raise a false
  peer-unreachable at the peer).
- The throttle is touched only from the event loop (``login`` is a coroutine), so it
  needs no lock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from seawall.errors import RateLimited
from seawall.manager.access.service import AccessService
from seawall.manager.access.throttle import LoginThrottle

VERIFY_WORKERS = 1
VERIFY_QUEUE_MAX = 8


class LoginGate:
    def __init__(self, access: AccessService, throttle: LoginThrottle | None = None,
                 clock_s: Callable[[], float] = time.monotonic) -> None:
        self.access = access
        self.throttle = throttle or LoginThrottle()
        self.clock_s = clock_s
        self._pool = ThreadPoolExecutor(VERIFY_WORKERS, thread_name_prefix="login")
        self._in_flight = 0

    async def login(self, user: str, password: str, source: str, expires_s: float | None,
                    token_name: str) -> dict[str, Any]:
        """A new token for ``user`` (``AccessService.login``), unless throttled."""
        now_s = self.clock_s()
        wait_s = self.throttle.wait_s(user, source, now_s)
        if wait_s > 0:
            retry_after_s = math.ceil(wait_s)
            raise RateLimited(f"too many failed logins: retry in {retry_after_s} s",
                              retry_after_s)
        if self._in_flight >= VERIFY_WORKERS + VERIFY_QUEUE_MAX:
            raise RateLimited("too many logins at once: retry in 1 s", 1)
        self.throttle.begin(user, source, now_s)
        self._in_flight += 1
        try:
            token = await asyncio.wrap_future(self._pool.submit(
                self.access.login, user, password, expires_s, token_name))
        finally:
            self._in_flight -= 1
        self.throttle.succeeded(user)
        return token

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
