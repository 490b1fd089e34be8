"""The built-in plugins, one module each (docs/AGENT.md lists their data)."""
