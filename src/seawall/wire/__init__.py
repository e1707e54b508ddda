"""The replication wire protocol: stream records, frames, and the connection state machine."""
