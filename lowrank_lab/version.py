"""The lowrank_lab version, written into every checkpoint it saves."""

__version__ = "0.1.0"
