"""Revisions of the manager's schema, in order (0001, 0002, ...); see the package docstring."""
