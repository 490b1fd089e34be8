"""heartbeat: a small, complete host-monitoring daemon on Twisted."""

__version__ = "0.1.0"
