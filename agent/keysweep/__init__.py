"""keysweep: find long-lived AWS access keys on a host, prove which are live, and say what should replace them."""

__version__ = "0.1.0"
