"""``site run`` keeps its agent running: an agent that stops while the site runs is started
again.

Rules:
- The keeper watches the agent it started (its process) or the one it adopted (the pid in
  ``run/agent.pid``) every ``POLL_S``. When it is gone, the keeper logs it, waits, and starts
  a new one, or adopts one that answers by then (started by hand, say): never two.
- Waits grow while agents keep dying young: ``RESTART_DELAY_S``, doubled per failure up to
  ``RESTART_DELAY_MAX_S``; an agent that ran ``HEALTHY_AFTER_S`` resets them. A crash loop
  costs little and is in the log, once per attempt.
- ``stop()`` ends the watch before the site stops its agent, and waits for a start under way:
  the keeper never starts an agent once the site is stopping. ``process`` is the agent to
  stop then (None when adopted).
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable

from seawall.config import SiteConfig
from seawall.errors import SeawallError

log = logging.getLogger("seawall.site")

POLL_S = 0.5
RESTART_DELAY_S = 1.0
RESTART_DELAY_MAX_S = 60.0
HEALTHY_AFTER_S = 60.0


class AgentKeeper:
    def __init__(self, config: SiteConfig, process: subprocess.Popen[bytes] | None,
                 start_agent: Callable[[], subprocess.Popen[bytes] | None]) -> None:
        """``start_agent``: starts an agent and waits until it answers (None: adopted one)."""
        self.config = config
        self.process = process
        self._start_agent = start_agent
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="agent-keeper", daemon=True)
        self._delay_s = RESTART_DELAY_S

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        started = time.monotonic()
        while not self._stopping.wait(POLL_S):
            if self._alive():
                continue
            ran_s = time.monotonic() - started
            if ran_s >= HEALTHY_AFTER_S:
                self._delay_s = RESTART_DELAY_S
            log.error("the agent of site %s stopped (after %.0f s); starting it again in "
                      "%.0f s", self.config.name, ran_s, self._delay_s)
            if self._stopping.wait(self._delay_s):
                return
            self._delay_s = min(self._delay_s * 2, RESTART_DELAY_MAX_S)
            self._restart()
            started = time.monotonic()

    def _alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        pid = _pid_of(self.config)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _restart(self) -> None:
        try:
            process = self._start_agent()
        except SeawallError as exc:
            log.error("the agent of site %s did not start again: %s", self.config.name,
                      exc.message)
            return
        self.process = process
        log.info("the agent of site %s runs again", self.config.name)


def _pid_of(config: SiteConfig) -> int | None:
    try:
        return int((config.run_dir / "agent.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
