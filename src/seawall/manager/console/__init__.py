"""The web console: server-rendered pages (Jinja2 + htmx) on the manager's API port, at ``/``."""
