"""Seawall: continuous data protection and disaster recovery for block devices."""

__version__ = "0.1.0"
