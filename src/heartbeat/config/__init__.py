"""Configuration: typed schemas, the loader that checks them, one-line errors.

One concern per module; import from the module that owns a name (this package
re-exports nothing, so importing the agent's schema never loads the server's):

- ``loader``: the generic typed loader (YAML -> frozen dataclass), ``option``
  to declare a key, ``ConfigError`` (one line naming file and key).
- ``checks``: checks of single keys that both schemas use.
- ``server``: the server's schema (``ServerConfig`` and its sections).
- ``server_checks``: the server's cross-key checks, and ``push_services``.
- ``agent``: the agent's schema (``AgentConfig``); imports nothing of the server.
- ``masking``: secrets masked for the settings page and the API.

A server config is loaded for running through ``heartbeat.server.settings``,
which builds the threshold rule book with it. docs/CONFIGURATION.md is the
user's description.
"""
