"""nnzip: compress trained neural-network weight files and check they still work."""

__version__ = "0.1.0"
