"""Test helpers: the fault-injection proxy and wire session builders (not tests)."""
