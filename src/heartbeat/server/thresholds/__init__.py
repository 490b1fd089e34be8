"""Threshold rules and the alert state machine: plugin data and RTT in, alerts out.

Pure code (no reactor, no I/O, ``now`` is an argument), one concern per module;
import from the module that owns a name:

- ``templates``: the ``display:`` templates of rules, checked once, filled per alert.
- ``rules``: the alert levels, one :class:`~.rules.Rule`, and trees of rules.
- ``rulebook``: the threshold keys of a server config checked into a
  :class:`~.rulebook.RuleBook` (one-line ``ConfigError`` per problem).
- ``compiled``: a host's effective rules compiled for the walk.
- ``plugins``: what the engine knows of particular plugins (built-in rules,
  sample adapters such as ZFS pool health).
- ``engine``: the :class:`~.engine.ThresholdEngine`, its alert states and alerts.

docs/THRESHOLD_ALERTING.md is the user's description.
"""
