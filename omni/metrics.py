"""Prometheus metrics, read from the hub at scrape time.

Rules: nothing is computed per message beyond bumping a plain integer counter; gauges and
totals are collected only when ``/metrics`` is scraped. Each server has its own
``CollectorRegistry`` so several servers (tests) can run in one process.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from omni.actors.hub import Hub
from omni.attachments import AttachmentCounters
from omni.gateway.relay import Relay
from omni.webhooks import OUTCOMES


class HubCollector(Collector):
    def __init__(
        self, hub: Hub, attachments: AttachmentCounters | None = None, relay: Relay | None = None
    ) -> None:
        self.hub = hub
        self.attachments = attachments
        self.relay = relay

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        hub = self.hub
        connections = GaugeMetricFamily(
            "omni_connections", "Open websocket connections", labels=["kind"]
        )
        for kind, count in sorted(hub.metrics.connections.items()):
            connections.add_metric([kind], count)
        yield connections

        conversations = GaugeMetricFamily(
            "omni_conversations", "Open conversations by state", labels=["state"]
        )
        for state, count in sorted(hub.conversations_by_status().items()):
            conversations.add_metric([state], count)
        yield conversations

        queues = GaugeMetricFamily(
            "omni_queue_length", "Conversations waiting per group", labels=["group"]
        )
        for group_id, length in sorted(hub.queue_lengths.items()):
            queues.add_metric([str(group_id)], length)
        yield queues

        operators = GaugeMetricFamily(
            "omni_operators",
            "Operators by presence, and paused ones by pause reason ('' when none given)",
            labels=["presence", "reason"],
        )
        # Every configured reason has a series (0 too), and only those: the label set stays
        # bounded whatever was configured before (a reason since removed counts as '').
        reasons = [r.id for r in hub.directory.parameters.pause_reasons]
        counts: dict[tuple[str, str], int] = {
            ("available", ""): 0,
            ("offline", ""): 0,
            ("paused", ""): 0,
            **{("paused", reason): 0 for reason in reasons},
        }
        for operator in hub.roster:
            reason = operator.pause_reason or ""
            key = (operator.presence.value, reason if reason in reasons else "")
            counts[key] = counts.get(key, 0) + 1
        for labels, count in sorted(counts.items()):
            operators.add_metric(list(labels), count)
        yield operators

        relayed = CounterMetricFamily("omni_messages_relayed", "Chat messages stored and delivered")
        relayed.add_metric([], hub.metrics.messages_relayed)
        yield relayed

        refused = CounterMetricFamily(
            "omni_refused",
            "Handshakes refused and connections closed by the limits (docs/security.md), by reason",
            labels=["reason"],
        )
        for reason, count in sorted(hub.metrics.refused.items()):
            refused.add_metric([reason], count)
        yield refused

        emails = CounterMetricFamily(
            "omni_emails",
            "E-mails through the outbox (transcripts), by outcome",
            labels=["outcome"],
        )
        for outcome, count in sorted(hub.metrics.emails.items()):
            emails.add_metric([outcome], count)
        yield emails

        yield from _webhook_metrics(hub)
        yield from _channel_metrics(hub)

        if self.attachments is not None:
            yield from _attachment_metrics(self.attachments)
        if self.relay is not None:
            yield from _cluster_metrics(hub, self.relay)

        stats = hub.conversations_supervisor.statistics()
        restarts = CounterMetricFamily(
            "omni_actor_restarts", "Actor restarts after a crash", labels=["supervisor"]
        )
        restarts.add_metric(["conversations"], stats.restarts)
        restarts.add_metric(["groups"], hub.groups_supervisor.statistics().restarts)
        yield restarts


def make_registry(
    hub: Hub, attachments: AttachmentCounters | None = None, relay: Relay | None = None
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(hub, attachments, relay))
    return registry


def _cluster_metrics(hub: Hub, relay: Relay) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """Cluster mode (docs/scale-out.md): groups owned, sockets relayed, relay items, calls."""
    owned = GaugeMetricFamily("omni_groups_owned", "Groups this node owns (cluster mode)")
    owned.add_metric([], len(hub.fences))
    yield owned
    held, served, stats = relay.statistics()
    sockets = GaugeMetricFamily(
        "omni_relayed_sockets",
        "Sockets relayed between nodes: held here for another node, or served here",
        labels=["side"],
    )
    sockets.add_metric(["held"], held)
    sockets.add_metric(["served"], served)
    yield sockets
    items = CounterMetricFamily(
        "omni_relay_items", "Relay rows sent, by direction", labels=["direction"]
    )
    for direction, count in sorted(stats.items.items()):
        items.add_metric([direction], count)
    yield items
    calls = CounterMetricFamily(
        "omni_relay_calls", "Calls to other nodes, by name and outcome", labels=["name", "outcome"]
    )
    for (name, outcome), count in sorted(stats.calls.items()):
        calls.add_metric([name, outcome], count)
    yield calls


def _webhook_metrics(hub: Hub) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    counts = hub.metrics.webhooks
    queued = CounterMetricFamily(
        "omni_webhooks_queued", "Webhook deliveries queued by conversations' events"
    )
    queued.add_metric([], counts.get("queued", 0))
    yield queued
    attempts = CounterMetricFamily(
        "omni_webhook_attempts",
        "Webhook delivery attempts, by outcome (delivered, http_error, redirect, timeout, "
        "connection_error, address_refused, subscription_gone)",
        labels=["outcome"],
    )
    for outcome in OUTCOMES:
        attempts.add_metric([outcome], hub.metrics.webhook_attempts.get(outcome, 0))
    yield attempts
    parked = CounterMetricFamily(
        "omni_webhooks_parked", "Webhook deliveries parked after their last failed attempt"
    )
    parked.add_metric([], counts.get("failed", 0))
    yield parked
    backlog = GaugeMetricFamily(
        "omni_outbox_pending",
        "Outbox items waiting to be delivered, by kind (counted every few seconds)",
        labels=["kind"],
    )
    for kind in ("channel", "email", "webhook"):
        backlog.add_metric([kind], hub.metrics.outbox_backlog.get(kind, 0))
    yield backlog


#: The outcomes of channels' replies as published, and the outbox's counter of each (a reply
#: the outbox gave up on is "failed" there, "parked" here as for webhooks: the API puts it back).
CHANNEL_OUTCOMES = {"queued": "queued", "sent": "sent", "retried": "retried", "parked": "failed"}


def _channel_metrics(hub: Hub) -> Iterator[CounterMetricFamily]:
    replies = CounterMetricFamily(
        "omni_channel_replies",
        "Replies to messaging channels, by outcome: queued (each part of a long text counts), "
        "sent, retried (a failed attempt to be tried again), parked (given up on)",
        labels=["outcome"],
    )
    for outcome, counted in CHANNEL_OUTCOMES.items():
        replies.add_metric([outcome], hub.metrics.channels.get(counted, 0))
    yield replies


def _attachment_metrics(
    counters: AttachmentCounters,
) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    uploaded = CounterMetricFamily("omni_attachment_uploads", "Uploads kept (F11)")
    uploaded.add_metric([], counters.uploaded_files)
    yield uploaded
    uploaded_bytes = CounterMetricFamily("omni_attachment_upload_bytes", "Bytes of uploads kept")
    uploaded_bytes.add_metric([], counters.uploaded_bytes)
    yield uploaded_bytes
    refused = CounterMetricFamily(
        "omni_attachment_uploads_refused",
        "Uploads refused, by reason (the problem type's last part)",
        labels=["reason"],
    )
    for reason, count in sorted((counters.refused or {}).items()):
        refused.add_metric([reason], count)
    yield refused
    files = GaugeMetricFamily(
        "omni_attachments_stored", "Attachments kept (as of the last clean-up pass or upload)"
    )
    files.add_metric([], counters.stored_files)
    yield files
    stored = GaugeMetricFamily("omni_attachments_stored_bytes", "Bytes of the attachments kept")
    stored.add_metric([], counters.stored_bytes)
    yield stored
    deleted = CounterMetricFamily(
        "omni_attachment_files_deleted", "Files deleted by the clean-up job (retention, pending)"
    )
    deleted.add_metric([], counters.deleted_files)
    yield deleted
