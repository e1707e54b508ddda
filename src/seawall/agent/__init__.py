"""The agent: the data path of a host, in folders that follow the flow of the bytes.

- ``frontend/``: the NBD server shell, the reply gate, the export backend interface.
- ``protect/``: the protected side: volumes, protected groups, their stream, syncer,
  checkpoint log, shipper and coordinated checkpoints.
- ``recover/``: the recovery side: receiver, recovery groups (journal), aging, hash answers.
- ``images/``: what is served from a journal: exports, scratch images, live images.
- ``failover/``: drills (failover tests), live failovers, the source side of a failover.
- ``control/``: the control APIs (Unix socket, TCP), their routes, scripts, metrics.
- Top level: the ``Agent`` (``service``) that owns the collections, its persisted
  ``state``, settings, joining a site, and the process entry point (``main``).

Rules: ``protect`` and ``recover`` never import each other; only ``control`` serves
HTTP; no import circles (``tests/unit/test_import_graph.py``).
"""
