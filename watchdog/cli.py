"""The ``pipeline-watchdog`` command: ``run``, ``check`` and ``validate``.

Exit codes: 0 success (``check``: every pipeline fresh), 1 (``check`` only) some
pipeline is stale or missing, 2 an error (bad configuration, Prometheus failing,
the port taken).  Errors are one line on stderr, never a traceback.
"""

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from watchdog import __version__
from watchdog.config import Settings, load_settings
from watchdog.durations import format_duration
from watchdog.exceptions import ConfigError, SourceError
from watchdog.freshness import PipelineStatus
from watchdog.notifications import describe, iso_time

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_LATE = 1
EXIT_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            _error(problem)
        return EXIT_ERROR

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
    validate = commands.add_parser("validate", help="check a configuration file")

    for command in (run, check, validate):
        command.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
    return parser


def _error(message: str) -> None:
    print(f"pipeline-watchdog: {message}", file=sys.stderr)  # noqa: T201


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # APScheduler logs every job run at INFO: that is the daemon's heartbeat, not news.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from prometheus_client import disable_created_metrics

    from watchdog.daemon import Daemon  # the scheduler is only needed here

    # The *_created series double every counter's output and tell nothing here.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    _configure_logging(settings)
    try:
        daemon = Daemon(settings)
    except OSError as exc:
        _error(f"cannot listen on {settings.listen}: {exc.strerror}")
        return EXIT_ERROR

    daemon.run_until_stopped()
    return EXIT_OK


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from watchdog.service import Watchdog

    _configure_logging(settings)
    try:
        evaluation = Watchdog(settings).evaluate()
    except SourceError as exc:
        _error(f"cannot evaluate: Prometheus query failed: {exc}")
        return EXIT_ERROR

    statuses = list(evaluation.statuses.values())
    if args.format == "json":
        print(json.dumps(_as_json(statuses), indent=2))  # noqa: T201
    else:
        print(_as_table(statuses))  # noqa: T201
    if not statuses:
        _error("no pipelines found: no series of " + settings.metric)
    return EXIT_LATE if any(s.is_problem for s in statuses) else EXIT_OK


def _validate(settings: Settings, args: argparse.Namespace) -> int:
    print(  # noqa: T201
        f"{args.config}: valid ({len(settings.pipelines)} pipelines, "
        f"{len(settings.receivers)} receivers)"
    )
    return EXIT_OK


def _as_json(statuses: list[PipelineStatus]) -> dict[str, object]:
    evaluated_at = statuses[0].evaluated_at if statuses else None
    return {
        "evaluated_at": iso_time(evaluated_at),
        "pipelines": [
            {
                "pipeline": s.pipeline,
                "state": str(s.state),
                "age_seconds": None if s.age is None else round(s.age, 3),
                "max_age_seconds": s.max_age,
                "last_success": iso_time(s.last_success),
                "summary": describe(s),
            }
            for s in statuses
        ],
    }


def _as_table(statuses: list[PipelineStatus]) -> str:
    rows = [("PIPELINE", "STATE", "AGE", "MAX AGE", "LAST SUCCESS")]
    for s in statuses:
        age = "-" if s.age is None else format_duration(s.age)
        rows.append(
            (
                s.pipeline,
                str(s.state),
                age,
                format_duration(s.max_age),
                iso_time(s.last_success) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
