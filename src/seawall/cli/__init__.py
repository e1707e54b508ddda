"""The ``seawall`` command line."""
