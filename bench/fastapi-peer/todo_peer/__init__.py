"""The FastAPI comparison peer of `make bench-write PEER=1` (see ../README.md)."""
