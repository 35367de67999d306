"""Delivery: getting each notification to its receiver, in order, despite failures.

Notifications wait in a queue per receiver and go out oldest first, so a
``resolved`` never overtakes the ``firing`` it answers.  A transient failure
(connection error, timeout, 5xx, 408, 429) is retried with exponential backoff; a
permanent one (other 4xx) or an exhausted budget drops the notification with an
ERROR log and a counter.

The queue lives in memory: notifications not yet delivered when the process stops
are lost, and delivery runs at the end of each evaluation cycle, so a slow receiver
delays that cycle by up to its timeout per attempt.
"""

import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from watchdog.alerts import AlertEvent, AlertStatus, alert_labels
from watchdog.exceptions import DeliveryError
from watchdog.metrics import WatchdogMetrics
from watchdog.notifications import Notification
from watchdog.receivers import Receiver

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
FIRST_RETRY_DELAY = 2.0
MAX_RETRY_DELAY = 300.0


@dataclass(frozen=True)
class Policy:
    """How one receiver wants its notifications: grouping, size, all-clears."""

    group_by: tuple[str, ...] = ()
    max_alerts: int = 40
    send_resolved: bool = True


def _groups(
    events: list[AlertEvent], group_by: tuple[str, ...]
) -> dict[tuple[tuple[str, str], ...], list[AlertEvent]]:
    """Events by the values of the ``group_by`` labels, in first-seen order."""
    groups: dict[tuple[tuple[str, str], ...], list[AlertEvent]] = {}
    for event in events:
        labels = alert_labels(event.pipeline, event.severity)
        key = tuple((name, labels.get(name, "")) for name in group_by)
        groups.setdefault(key, []).append(event)
    return groups


@dataclass
class _Pending:
    notification: Notification
    attempts: int = 0
    next_attempt_at: float = 0.0


class Dispatcher:
    """Queues notifications per receiver and delivers those that are due."""

    def __init__(
        self,
        receivers: Sequence[Receiver],
        metrics: WatchdogMetrics,
        clock: Callable[[], float],
        policies: Mapping[str, Policy] | None = None,
    ) -> None:
        self._receivers = {receiver.name: receiver for receiver in receivers}
        self._policies = dict(policies or {})
        self._queues: dict[str, deque[_Pending]] = {name: deque() for name in self._receivers}
        self._metrics = metrics
        self._clock = clock

    def submit(self, events: Iterable[AlertEvent], now: float) -> None:
        """Queue this cycle's events: per receiver, per status, per group, one message.

        Each event goes to its routed receivers (all of them when it names none); a
        receiver with ``send_resolved: false`` gets no all-clear.  Fifty pipelines
        going stale in one cycle make one message per receiver, not fifty.
        """
        events = list(events)
        for name, queue in self._queues.items():
            policy = self._policies.get(name, Policy())
            mine = [e for e in events if e.receivers is None or name in e.receivers]
            if not policy.send_resolved:
                mine = [e for e in mine if e.status is not AlertStatus.resolved]

            for status in (AlertStatus.firing, AlertStatus.resolved):
                batch = [e for e in mine if e.status is status]
                for group, grouped in _groups(batch, policy.group_by).items():
                    notification = Notification(
                        receiver=name,
                        status=status,
                        events=grouped[: policy.max_alerts],
                        created_at=now,
                        group=dict(group),
                        omitted=max(len(grouped) - policy.max_alerts, 0),
                    )
                    # Due by the local clock, which decides retries; ``now`` is Prometheus's.
                    queue.append(_Pending(notification, next_attempt_at=self._clock()))
        self._update_pending()

    def deliver_due(self) -> None:
        """Send every queued notification whose time has come, receiver by receiver."""
        for name, queue in self._queues.items():
            receiver = self._receivers[name]
            while queue and queue[0].next_attempt_at <= self._clock():
                if not self._attempt(receiver, queue[0]):
                    break  # keep order: later notifications wait for this one
                queue.popleft()
        self._update_pending()

    def pending(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def _attempt(self, receiver: Receiver, pending: _Pending) -> bool:
        """Try once; True when the notification is done with (sent or dropped)."""
        notification = pending.notification
        pending.attempts += 1
        try:
            receiver.send(notification)
        except DeliveryError as exc:
            return self._failed(receiver.name, pending, exc)
        except Exception as exc:
            # A defect in rendering must not wedge the queue behind this notification.
            log.exception("notification could not be built: receiver=%s", receiver.name)
            reason = f"internal error: {type(exc).__name__}"
            return self._failed(receiver.name, pending, DeliveryError(reason, permanent=True))

        self._metrics.notifications.labels(receiver.name, "sent").inc()
        log.info(
            "notification sent: receiver=%s status=%s alerts=%d id=%s",
            receiver.name,
            notification.status,
            len(notification.events),
            notification.id,
        )
        return True

    def _failed(self, receiver: str, pending: _Pending, exc: DeliveryError) -> bool:
        notification = pending.notification
        if exc.permanent or pending.attempts >= MAX_ATTEMPTS:
            why = "permanent error" if exc.permanent else f"{pending.attempts} attempts"
            log.error(
                "notification dropped: receiver=%s status=%s id=%s after %s: %s",
                receiver,
                notification.status,
                notification.id,
                why,
                exc.reason,
            )
            self._metrics.notifications.labels(receiver, "failed").inc()
            return True

        delay = min(FIRST_RETRY_DELAY * 2 ** (pending.attempts - 1), MAX_RETRY_DELAY)
        pending.next_attempt_at = self._clock() + delay
        log.warning(
            "notification not delivered: receiver=%s id=%s attempt %d: %s; retry in %.0fs",
            receiver,
            notification.id,
            pending.attempts,
            exc.reason,
            delay,
        )
        return False

    def _update_pending(self) -> None:
        self._metrics.pending_notifications.set(self.pending())
