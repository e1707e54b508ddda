"""The agent's control APIs (Unix socket, TCP with mutual TLS), routes, scripts, metrics."""
