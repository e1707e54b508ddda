"""Agents of the site: its own (on the Unix socket) and those joined from other hosts."""
