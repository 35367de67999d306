"""Logging set-up: one line per event, as text or as JSON.

JSON lines carry ``time``, ``level``, ``logger`` and ``message``, plus the event's
fields when the log call gave them (``extra={"pipeline": ..., "state": ...}``), so
a log pipeline can filter on a pipeline or a receiver without parsing text.
"""

import json
import logging
import sys
from datetime import UTC, datetime

# Fields a log call may attach with ``extra=``; only these go into JSON lines.
EVENT_FIELDS = (
    "pipeline",
    "check",
    "state",
    "old_state",
    "receiver",
    "status",
    "notification_id",
    "attempt",
    "kind",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EVENT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, format: str) -> None:
    """Send the watchdog's logs to stderr, in ``format`` (text or json), from ``level`` up."""
    handler = logging.StreamHandler(sys.stderr)
    if format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

    # APScheduler logs every job run at INFO, and a skipped run at WARNING, which the
    # daemon reports in its own words; its errors still come through.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    # urllib3's own lines name the URL, which for a webhook is a secret; every failure
    # reaches our logs through the project's exceptions instead.
    logging.getLogger("urllib3").setLevel(logging.CRITICAL + 1)


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe for one log line: control characters escaped, long text cut.

    Pipeline names come from label values, which may hold newlines that would
    otherwise forge log lines.
    """
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."
