"""The heartbeat agent: ``twistd heartbeat-agent SERVER`` (docs/AGENT.md)."""
