"""Fixtures of the VM tests: one real libvirtd and one set of real guests per session.

``guests`` builds the test guest (``support.guests``; cached across runs), starts one
guest that writes its counter continuously (a raw ``vda``, a qcow2 ``vdb``, an empty
CD-ROM ``hdc``, a NIC on an isolated network) and defines one that stays shut off. Every
test shares them, so a test that changes a guest (a mirror) leaves it as it found it.
Where no libvirtd can run, the tests skip, saying why.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.guests import LIBVIRT_URI, SessionGuests, libvirt_problem, start_session_guests


@pytest.fixture(scope="session")
def guests() -> Iterator[SessionGuests]:
    problem = libvirt_problem(LIBVIRT_URI)
    if problem is not None:
        pytest.skip(f"no libvirt for the VM tests: {problem}")
    guest_set = start_session_guests(LIBVIRT_URI)
    try:
        yield guest_set
    finally:
        guest_set.host.close()
