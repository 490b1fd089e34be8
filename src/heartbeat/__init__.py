"""heartbeat: a small, complete host-monitoring daemon on Twisted."""

__version__ = "0.1.0"


def version_line(program: str = "heartbeat") -> str:
    """What ``--version`` prints everywhere: ours first, then Twisted's and Python's."""
    import platform  # noqa: PLC0415 - only for --version

    import twisted  # noqa: PLC0415

    return (f"{program} {__version__} (Twisted {twisted.__version__}, "
            f"Python {platform.python_version()})")
