"""Delivery: getting each notification to its receiver, once decided, despite failures.

1. A decided notification is rendered into messages and written to the **outbox**
   (a table of the state file), in the same transaction as the alert state that
   decided it.  Only then is it queued for sending, so a kill at any point loses
   nothing: what was decided is sent after the next start.
2. One worker thread per receiver sends its messages **in order** (a ``resolved``
   never overtakes its ``firing``), so a receiver that is down or slow delays only
   itself, never another receiver nor an evaluation cycle.
3. A message is removed from the outbox only when the receiver answered 2xx.  That
   makes delivery at-least-once: a kill between the 2xx and the removal sends it
   again after the restart, with the same ``Idempotency-Key``, so a receiver can
   drop the repeat.
4. A transient failure (connection error, timeout, 5xx, 408, 429) is retried with
   exponential backoff and jitter, or after the ``Retry-After`` the receiver gave;
   a permanent one (other 4xx, a redirect), or a message past ``max_attempts`` or
   ``max_age``, is dropped with an ERROR log and counted: never silently.
5. On SIGTERM the workers get ``shutdown_timeout`` to drain what is due; the rest
   stays in the outbox for the next start.

Without a store (``check``, unit tests) the outbox lives in memory, and
``deliver_due`` sends from the calling thread.
"""

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from watchdog.alerts import AlertEvent, AlertStatus, alert_labels
from watchdog.config import DeliveryConfig
from watchdog.exceptions import DeliveryError, StoreError
from watchdog.metrics import WatchdogMetrics
from watchdog.notifications import Notification
from watchdog.receivers import Message, Receiver
from watchdog.store import OutboxEntry, StateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    """How one receiver wants its notifications: grouping, size, all-clears."""

    group_by: tuple[str, ...] = ()
    max_alerts: int = 40
    send_resolved: bool = True


GroupKey = tuple[tuple[str, str], ...]


def _groups(
    events: list[AlertEvent], group_by: tuple[str, ...]
) -> dict[GroupKey, list[AlertEvent]]:
    """Events by the values of the ``group_by`` labels, in first-seen order."""
    groups: dict[GroupKey, list[AlertEvent]] = {}
    for event in events:
        labels = alert_labels(event.pipeline, event.severity)
        key = tuple((name, labels.get(name, "")) for name in group_by)
        groups.setdefault(key, []).append(event)
    return groups


class Dispatcher:
    """Turns events into outbox entries and delivers them, one worker per receiver."""

    def __init__(
        self,
        receivers: Sequence[Receiver],
        metrics: WatchdogMetrics,
        clock: Callable[[], float],
        policies: Mapping[str, Policy] | None = None,
        *,
        store: StateStore | None = None,
        config: DeliveryConfig | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._receivers = {receiver.name: receiver for receiver in receivers}
        self._policies = dict(policies or {})
        self._metrics = metrics
        self._clock = clock
        self._store = store
        self._config = config or DeliveryConfig()
        self._jitter = jitter

        self._lock = threading.Condition()
        self._queues: dict[str, deque[OutboxEntry]] = {name: deque() for name in self._receivers}
        self._last_sent: dict[str, float] = {}
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._drain_until: float | None = None
        self._restore()

    # Deciding --------------------------------------------------------------------

    def prepare(self, events: Iterable[AlertEvent], now: float) -> list[OutboxEntry]:
        """Render this cycle's events into outbox entries, not yet queued.

        Per receiver, per status and per group, one notification; fifty pipelines
        going stale in one cycle make one message per receiver, not fifty.  Each
        event goes to its routed receivers (all when it names none); a receiver
        with ``send_resolved: false`` gets no all-clear.
        """
        events = list(events)
        entries: list[OutboxEntry] = []
        for name, receiver in self._receivers.items():
            for notification in self._notifications(name, events, now):
                for message in receiver.render(notification):
                    entries.append(self._entry(message))
        return entries

    def _notifications(
        self, name: str, events: list[AlertEvent], now: float
    ) -> Iterable[Notification]:
        policy = self._policies.get(name, Policy())
        mine = [e for e in events if e.receivers is None or name in e.receivers]
        if not policy.send_resolved:
            mine = [e for e in mine if e.status is not AlertStatus.resolved]

        for status in (AlertStatus.firing, AlertStatus.resolved):
            batch = [e for e in mine if e.status is status]
            for group, grouped in _groups(batch, policy.group_by).items():
                yield Notification(
                    receiver=name,
                    status=status,
                    events=grouped[: policy.max_alerts],
                    created_at=now,
                    group=dict(group),
                    omitted=max(len(grouped) - policy.max_alerts, 0),
                )

    def _entry(self, message: Message) -> OutboxEntry:
        # Dated by the local clock, which decides retries and age; the body carries
        # Prometheus's evaluation time.
        now = self._clock()
        return OutboxEntry(
            id=message.id,
            receiver=message.receiver,
            body=message.body,
            status=message.status,
            alerts=message.alerts,
            created_at=now,
            next_attempt_at=now,
        )

    def enqueue(self, entries: Iterable[OutboxEntry]) -> None:
        """Queue entries already stored (or to keep in memory only) and wake workers."""
        with self._lock:
            for entry in entries:
                self._queues[entry.receiver].append(entry)
            self._lock.notify_all()
        self._update_pending()

    def submit(self, events: Iterable[AlertEvent], now: float) -> None:
        """Prepare and queue, storing the entries first when there is a store."""
        entries = self.prepare(events, now)
        if self._store is not None and entries:
            self._store.save_alerts([], [], entries)
        self.enqueue(entries)

    def pending(self) -> int:
        with self._lock:
            return sum(len(queue) for queue in self._queues.values())

    # Sending ---------------------------------------------------------------------

    def deliver_due(self) -> None:
        """Send what is due now, from the calling thread, receiver by receiver."""
        for name in self._receivers:
            while self._send_head(name, wait=False):
                pass

    def start(self) -> None:
        """Start one worker thread per receiver (again, after a stop)."""
        self._stopping.clear()
        with self._lock:
            self._drain_until = None
        for name in self._receivers:
            worker = threading.Thread(
                target=self._work, args=(name,), name=f"deliver-{name}", daemon=True
            )
            worker.start()
            self._workers.append(worker)

    @property
    def running(self) -> bool:
        return bool(self._workers)

    def stop(self, timeout: float | None = None) -> None:
        """Give the workers ``timeout`` (``shutdown_timeout``) to send what is due."""
        timeout = self._config.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._lock:
            self._drain_until = deadline
            self._lock.notify_all()
        for worker in self._workers:
            worker.join(max(deadline - time.monotonic(), 0.0))
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
        left = self.pending()
        if left:
            log.warning(
                "stopping with %d notifications undelivered; sent after the next start", left
            )
        self._workers.clear()

    def _work(self, name: str) -> None:
        while not self._stopping.is_set():
            try:
                if not self._send_head(name, wait=True):
                    return
            except Exception:
                # A defect must not kill the worker: the next message still deserves to go.
                log.exception("delivery worker for receiver %s failed; continuing", name)
                self._stopping.wait(1.0)

    def _send_head(self, name: str, *, wait: bool) -> bool:
        """Send the head of ``name``'s queue if due; False when there is nothing to do.

        With ``wait`` it blocks until the head is due, or the dispatcher stops
        (returning False then).
        """
        entry = self._next_due(name, wait)
        if entry is None:
            return False

        receiver = self._receivers[name]
        self._pace(receiver)
        done = self._attempt(receiver, entry)
        if done:
            with self._lock:
                queue = self._queues[name]
                if queue and queue[0].id == entry.id:
                    queue.popleft()
        self._update_pending()
        return True

    def _next_due(self, name: str, wait: bool) -> OutboxEntry | None:
        with self._lock:
            while True:
                if self._stopping.is_set():
                    return None
                queue = self._queues[name]
                drain_until = self._drain_until
                draining = drain_until is not None
                if drain_until is not None and (not queue or time.monotonic() > drain_until):
                    return None
                if queue:
                    delay = queue[0].next_attempt_at - self._clock()
                    if delay <= 0:
                        return queue[0]
                    if draining:
                        return None  # not due before shutdown: stays in the outbox
                else:
                    delay = None
                if not wait:
                    return None
                self._lock.wait(timeout=None if delay is None else min(delay, 60.0))

    def _pace(self, receiver: Receiver) -> None:
        """Leave ``min_interval`` between two sends (Slack: one message a second)."""
        last = self._last_sent.get(receiver.name)
        if receiver.min_interval and last is not None:
            rest = receiver.min_interval - (time.monotonic() - last)
            if rest > 0:
                self._stopping.wait(rest)

    def _attempt(self, receiver: Receiver, entry: OutboxEntry) -> bool:
        """Try once; True when the entry is done with (delivered or dropped)."""
        message = Message(entry.id, entry.receiver, entry.body, entry.status, entry.alerts)
        entry.attempts += 1
        try:
            receiver.deliver(message)
        except DeliveryError as exc:
            self._last_sent[receiver.name] = time.monotonic()
            return self._failed(receiver.name, entry, exc)
        except Exception as exc:
            # A defect while sending must not wedge the queue behind this message.
            log.exception("notification could not be sent: receiver=%s", receiver.name)
            error = DeliveryError(f"internal error: {type(exc).__name__}", permanent=True)
            return self._failed(receiver.name, entry, error)

        self._last_sent[receiver.name] = time.monotonic()
        self._delivered(receiver.name, entry)
        return True

    def _delivered(self, receiver: str, entry: OutboxEntry) -> None:
        self._forget(entry)
        self._metrics.notification_attempts.labels(receiver, "delivered").inc()
        self._metrics.notifications.labels(receiver, "sent").inc()
        self._metrics.delivery_duration.labels(receiver).observe(
            max(self._clock() - entry.created_at, 0.0)
        )
        log.info(
            "notification sent: receiver=%s status=%s alerts=%d id=%s attempts=%d",
            receiver,
            entry.status,
            entry.alerts,
            entry.id,
            entry.attempts,
            extra={"receiver": receiver, "status": entry.status, "notification_id": entry.id},
        )

    def _failed(self, receiver: str, entry: OutboxEntry, exc: DeliveryError) -> bool:
        self._metrics.notification_attempts.labels(receiver, "failed").inc()
        config = self._config
        age = self._clock() - entry.created_at
        why = ""
        if exc.permanent:
            why = "permanent error"
        elif entry.attempts >= config.max_attempts:
            why = f"{entry.attempts} attempts"
        elif age >= config.max_age:
            why = f"{age:.0f}s without success (max_age)"
        if why:
            log.error(
                "notification dropped: receiver=%s status=%s id=%s after %s: %s",
                receiver,
                entry.status,
                entry.id,
                why,
                exc.reason,
                extra={"receiver": receiver, "status": entry.status, "notification_id": entry.id},
            )
            self._metrics.notifications.labels(receiver, "failed").inc()
            self._forget(entry)
            return True

        delay = self._backoff(entry.attempts, exc.retry_after)
        entry.next_attempt_at = self._clock() + delay
        entry.last_error = exc.reason
        self._save(entry)
        log.warning(
            "notification not delivered: receiver=%s id=%s attempt %d: %s; retry in %.1fs",
            receiver,
            entry.id,
            entry.attempts,
            exc.reason,
            delay,
        )
        return False

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter (half fixed, half random), or Retry-After."""
        if retry_after is not None:
            # "Retry-After: 0" or a date gone by must not turn into a burst of retries.
            return max(retry_after, self._config.initial_backoff)
        base = min(self._config.initial_backoff * 2.0 ** (attempts - 1), self._config.max_backoff)
        return base / 2 + base / 2 * self._jitter()

    # The outbox in the store -----------------------------------------------------

    def _restore(self) -> None:
        """Queue what a previous run decided but did not deliver."""
        if self._store is None:
            return
        entries = self._store.load_outbox()
        unknown = [e for e in entries if e.receiver not in self._receivers]
        for entry in unknown:
            log.warning(
                "notification for receiver %s dropped: no such receiver any more (id=%s)",
                entry.receiver,
                entry.id,
            )
            self._forget(entry)
        kept = [e for e in entries if e.receiver in self._receivers]
        if kept:
            log.info("%d undelivered notifications from the last run are queued", len(kept))
        self.enqueue(kept)

    def _forget(self, entry: OutboxEntry) -> None:
        if self._store is None:
            return
        try:
            self._store.delete_outbox(entry.id)
        except StoreError as exc:
            log.error("outbox entry %s not removed (it may be sent again): %s", entry.id, exc)

    def _save(self, entry: OutboxEntry) -> None:
        if self._store is None:
            return
        try:
            self._store.update_outbox(entry)
        except StoreError as exc:
            log.error("outbox entry %s not updated: %s", entry.id, exc)

    def _update_pending(self) -> None:
        with self._lock:
            counts = {name: len(queue) for name, queue in self._queues.items()}
        for name, count in counts.items():
            self._metrics.outbox_pending.labels(name).set(count)
        self._metrics.pending_notifications.set(sum(counts.values()))
