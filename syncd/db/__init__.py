"""The storage layer: every SQL statement syncd runs lives under this package."""
