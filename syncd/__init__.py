"""syncd: an RxDB-compatible sync server backed by PostgreSQL."""

__version__ = "0.1.0"
