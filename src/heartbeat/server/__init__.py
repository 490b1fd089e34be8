"""The heartbeat server: ``twistd -n heartbeat``."""
