"""The ``pipeline-watchdog`` command: ``run``, ``check`` and ``validate``.

Exit codes: 0 success (``check``: every pipeline fresh), 1 (``check`` only) some
pipeline is stale or missing, 2 an error (bad configuration, Prometheus failing,
the port taken).  Errors are one line on stderr, never a traceback.
"""

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from watchdog import __version__, logs
from watchdog.config import Settings, load_settings, unknown_environment
from watchdog.durations import format_duration, iso_time
from watchdog.exceptions import ConfigError, SourceError, StoreError
from watchdog.freshness import PipelineStatus
from watchdog.notifications import describe, subject

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_LATE = 1
EXIT_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (``check | head``): not an error of ours, and no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            _error(problem)
        return EXIT_ERROR

    for name in unknown_environment():
        _error(f"warning: environment variable {name} names no setting; it is ignored")

    command = {"run": _run, "check": _check, "validate": _validate}[args.command]
    return command(settings, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline-watchdog",
        description="Tell when an ML pipeline has silently stopped succeeding.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon until SIGTERM or SIGINT")
    check = commands.add_parser("check", help="evaluate once and print every pipeline's state")
    check.add_argument("--format", choices=("table", "json"), default="table")
    check.add_argument(
        "--at",
        metavar="TIME",
        help="evaluate as of a past instant: RFC 3339 (2026-12-04T03:00:00Z) or unix seconds",
    )
    check.add_argument(
        "--pipeline",
        action="append",
        default=[],
        metavar="NAME",
        help="only this pipeline (repeatable)",
    )
    validate = commands.add_parser("validate", help="check a configuration file")

    for command in (run, check, validate):
        command.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
    return parser


def _error(message: str) -> None:
    print(f"pipeline-watchdog: {message}", file=sys.stderr)  # noqa: T201


def _configure_logging(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_format)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from prometheus_client import disable_created_metrics

    from watchdog.daemon import Daemon  # the scheduler is only needed here

    # The *_created series double every counter's output and tell nothing here.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    _configure_logging(settings)
    try:
        daemon = Daemon(settings, config_path=Path(args.config))
    except StoreError as exc:
        _error(str(exc))
        return EXIT_ERROR
    except OSError as exc:
        _error(f"cannot listen on {settings.listen}: {exc.strerror}")
        return EXIT_ERROR

    daemon.run_until_stopped()
    return EXIT_OK


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from watchdog.service import Watchdog

    _configure_logging(settings)
    try:
        at = None if args.at is None else parse_instant(args.at)
    except ValueError as exc:
        _error(f"--at: {exc}")
        return EXIT_ERROR

    try:
        evaluation = Watchdog(settings).evaluate(at=at, pipelines=args.pipeline)
    except SourceError as exc:
        _error(f"cannot evaluate: Prometheus query failed: {exc}")
        return EXIT_ERROR

    statuses = list(evaluation)
    if args.pipeline:
        statuses = [s for s in statuses if s.pipeline in args.pipeline]
    if args.format == "json":
        print(json.dumps(_as_json(statuses), indent=2))  # noqa: T201
    else:
        print(_as_table(statuses))  # noqa: T201
    if not statuses:
        # Most often a misspelt metric or label, or the wrong Prometheus: not "all fresh".
        _error(
            f"no pipelines found: no series of {settings.metric} with a "
            f"{settings.pipeline_label} label, and none listed under pipelines"
        )
        return EXIT_ERROR
    return EXIT_LATE if any(s.is_problem for s in statuses) else EXIT_OK


def parse_instant(text: str) -> float:
    """Unix seconds from ``1796400000`` or RFC 3339 (``2026-12-04T03:00:00Z``, with offset)."""
    try:
        return float(text)
    except ValueError:
        pass

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValueError(
            f"invalid time {text!r}: expected RFC 3339 with a zone "
            "(2026-12-04T03:00:00Z, 2026-12-04T04:00:00+01:00) or unix seconds"
        )
    return moment.timestamp()


def _validate(settings: Settings, args: argparse.Namespace) -> int:
    pipelines, receivers = len(settings.pipelines), len(settings.receivers)
    print(  # noqa: T201
        f"{args.config}: valid ({_count(pipelines, 'pipeline entry', 'pipeline entries')}, "
        f"{_count(len(settings.checks), 'check', 'checks')}, "
        f"{_count(receivers, 'receiver', 'receivers')})"
    )
    return EXIT_OK


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def _as_json(statuses: list[PipelineStatus]) -> dict[str, object]:
    evaluated_at = statuses[0].evaluated_at if statuses else None
    return {
        "evaluated_at": iso_time(evaluated_at),
        "pipelines": [
            {
                "pipeline": s.pipeline,
                "check": s.check,
                "state": str(s.state),
                "age_seconds": _rounded(s.age),
                "max_age_seconds": s.max_age,
                "threshold": s.threshold,
                "last_success": iso_time(s.last_success),
                "next_deadline": iso_time(s.deadline),
                "overdue_seconds": _rounded(s.overdue),
                "lag_seconds": _rounded(s.lag),
                "reason": s.reason,
                "labels": s.labels,
                "summary": describe(s),
            }
            for s in statuses
        ],
    }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _as_table(statuses: list[PipelineStatus]) -> str:
    rows = [("PIPELINE", "STATE", "AGE", "THRESHOLD", "NEXT DEADLINE", "OVERDUE")]
    for s in statuses:
        measured = s.lag if s.lag is not None else s.age
        rows.append(
            (
                subject(s),
                str(s.state),
                _duration(measured),
                s.threshold or "-",
                iso_time(s.deadline) or "-",
                _duration(s.overdue) if s.overdue else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)
