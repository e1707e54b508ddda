"""The NBD front end: the asyncio server shell, its reply gate, the backends it serves."""
