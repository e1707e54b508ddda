"""Run a probe as another local user (``nobody``) in a forked child, and get its answer.

The child drops every group and then its user id before it runs the probe, so what it can
reach is exactly what any unprivileged user of the host could reach. Its result comes back
pickled over a pipe; an exception in the probe comes back as the exception's text.
"""

from __future__ import annotations

import os
import pickle
import pwd
from collections.abc import Callable
from typing import Any

import pytest

NOBODY = pwd.getpwnam("nobody")


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to become another local user (CI runs as root)")


def as_nobody(probe: Callable[..., Any], *args: Any, groups: tuple[int, ...] = ()) -> Any:
    """``probe(*args)`` run as ``nobody`` (with supplementary ``groups``); its result."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        status = 0
        try:
            os.close(read_fd)
            os.setgroups(list(groups))
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            try:
                answer: Any = ("ok", probe(*args))
            except Exception as exc:
                answer = ("raised", f"{type(exc).__name__}: {exc}")
            with os.fdopen(write_fd, "wb") as pipe:
                pickle.dump(answer, pipe)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and data, "the probe's child failed before it could answer"
    kind, value = pickle.loads(data)
    if kind == "raised":
        raise AssertionError(f"the probe raised: {value}")
    return value
