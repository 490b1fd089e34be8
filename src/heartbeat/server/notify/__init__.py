"""Notifications: host and alert events to people by e-mail, Pushover, Mattermost and Signal.

``message`` decides what is notified and words it, ``routing`` decides who gets it
on which channel, the channel modules deliver, and ``service.NotifierService`` runs
the queues, retries and storm digests between them. docs/NOTIFICATIONS.md.
"""

from heartbeat.server.notify.base import Channel, DeliveryError, Notification, redact
from heartbeat.server.notify.routing import Router
from heartbeat.server.notify.service import NotifierService, NotifySettings

__all__ = [
    "Channel",
    "DeliveryError",
    "Notification",
    "NotifierService",
    "NotifySettings",
    "Router",
    "redact",
]
