"""The agent: the data path of a host (NBD front end, stream, shipper, receiver, exports)."""
