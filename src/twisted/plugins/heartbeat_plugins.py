"""twistd dropin: ``twistd heartbeat`` (server) and ``twistd heartbeat-agent`` (agent).

Only declarations live here; the tap modules are imported when their command runs.
"""

from twisted.application.service import ServiceMaker

heartbeat_server = ServiceMaker(
    "heartbeat server",
    "heartbeat.server.tap",
    "Host-monitoring server: UDP heartbeats, host state, journal, REST API and WebSocket.",
    "heartbeat",
)

heartbeat_agent = ServiceMaker(
    "heartbeat agent",
    "heartbeat.agent.tap",
    "Host agent: heartbeats and plugin data to the heartbeat server(s), allow-listed commands.",
    "heartbeat-agent",
)
