"""Failovers: drills (failover tests), live failovers and the source side of a failover."""
