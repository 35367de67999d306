"""Configuration: a YAML file, overridden by ``WATCHDOG_*`` environment variables.

Every key can be set from the environment with the prefix ``WATCHDOG_`` and ``__``
between nesting levels (``WATCHDOG_PROMETHEUS__URL``); lists take JSON
(``WATCHDOG_PIPELINES='[{"name": "train", "max_age": "1h"}]'``).  The environment
wins over the file.  Problems are reported as one line each, naming the field.
"""

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from watchdog.durations import parse_duration
from watchdog.exceptions import ConfigError
from watchdog.schedule import check_expression, zone

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]


class _Section(BaseModel):
    # A misspelt key must fail loudly rather than silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrometheusConfig(_Section):
    """Where to query, and how long one query may take."""

    url: str = "http://127.0.0.1:9090"
    timeout: PositiveDuration = 10.0

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("must be an http:// or https:// URL")
        return url.rstrip("/")


TimestampUnit = Literal["seconds", "milliseconds", "microseconds", "nanoseconds"]


class PipelineDefaults(_Section):
    """Settings every pipeline gets unless a ``pipelines`` entry overrides them."""

    max_age: PositiveDuration = 7200.0
    forget_after: PositiveDuration = 86400.0
    timezone: str = "UTC"
    grace: Duration = 3600.0
    timestamp_unit: TimestampUnit = "seconds"
    future_tolerance: Duration = 300.0
    labels: dict[str, str] = {}

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        zone(name)
        return name

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        return _check_label_names(labels)


class PipelineConfig(_Section):
    """Settings for the pipeline called ``name``, or for every pipeline matching ``match``.

    An entry with ``name`` also declares that pipeline expected: it is ``missing``
    when Prometheus has no series for it.  Unset fields fall back to a matching
    ``match`` entry, then to ``defaults``.
    """

    name: Annotated[str, Field(min_length=1)] | None = None
    match: str | None = None
    max_age: PositiveDuration | None = None
    schedule: str | None = None
    timezone: str | None = None
    grace: Duration | None = None
    forget_after: PositiveDuration | None = None
    timestamp_unit: TimestampUnit | None = None
    labels: dict[str, str] = {}
    depends_on: list[str] = []

    @field_validator("match")
    @classmethod
    def _regex(cls, pattern: str) -> str:
        return _check_regex(pattern)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, expression: str) -> str:
        check_expression(expression)
        return expression

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        zone(name)
        return name

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        return _check_label_names(labels)

    @model_validator(mode="after")
    def _name_or_match(self) -> "PipelineConfig":
        if (self.name is None) == (self.match is None):
            raise ValueError("set exactly one of name and match")
        if self.match is not None and self.depends_on:
            raise ValueError("depends_on needs a pipeline name, not a match pattern")
        return self


class DiscoveryConfig(_Section):
    """Which pipelines found in Prometheus are watched (regexes match the whole name)."""

    include: list[str] = []
    exclude: list[str] = []

    @field_validator("include", "exclude")
    @classmethod
    def _regexes(cls, patterns: list[str]) -> list[str]:
        return [_check_regex(pattern) for pattern in patterns]


class CheckConfig(_Section):
    """A freshness check defined by PromQL, evaluated every cycle for every pipeline.

    - ``timestamp``: ``expr`` gives a unix timestamp per pipeline; late when older
      than ``threshold``.
    - ``age``: ``expr`` gives an age in seconds; late when above ``threshold``.
    - ``lag``: ``expr - baseline`` (two timestamps) is late when above ``threshold``.
    """

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]+$")]
    type: Literal["timestamp", "age", "lag"]
    expr: Annotated[str, Field(min_length=1)]
    baseline: str | None = None
    threshold: PositiveDuration

    @model_validator(mode="after")
    def _baseline_for_lag(self) -> "CheckConfig":
        if self.type == "lag" and not self.baseline:
            raise ValueError("a lag check needs baseline (the timestamp expr is compared to)")
        if self.type != "lag" and self.baseline is not None:
            raise ValueError("baseline only applies to lag checks")
        if self.name == "last_success":
            raise ValueError("the name last_success is taken by the built-in check")
        return self


def _check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return pattern


def _check_label_names(labels: dict[str, str]) -> dict[str, str]:
    for name in labels:
        if not _LABEL_NAME.match(name):
            raise ValueError(f"invalid label name {name!r}")
    return labels


class _ReceiverConfig(_Section):
    name: Annotated[str, Field(min_length=1)]
    url: SecretStr | None = None
    url_file: Path | None = None
    timeout: PositiveDuration = 10.0

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: SecretStr) -> SecretStr:
        _check_receiver_url(url.get_secret_value())
        return url

    @model_validator(mode="after")
    def _one_url(self) -> "_ReceiverConfig":
        if (self.url is None) == (self.url_file is None):
            raise ValueError("set exactly one of url and url_file")
        return self

    def resolve_url(self) -> str:
        """The receiver's URL, read from ``url_file`` when that is how it is given."""
        if self.url is not None:
            return self.url.get_secret_value()
        assert self.url_file is not None  # guaranteed by _one_url
        return self.url_file.read_text(encoding="utf-8").strip()


def _check_receiver_url(url: str) -> None:
    # The URL is a secret (a Slack webhook URL is its own credential): never echo it.
    if not re.match(r"^https?://[^/\s]+", url):
        raise ValueError("must be an http:// or https:// URL")


class WebhookReceiverConfig(_ReceiverConfig):
    """A generic JSON webhook (schema in the README)."""

    type: Literal["webhook"]


class SlackReceiverConfig(_ReceiverConfig):
    """A Slack incoming webhook."""

    type: Literal["slack"]


ReceiverConfig = Annotated[
    WebhookReceiverConfig | SlackReceiverConfig, Field(discriminator="type")
]


class Settings(BaseSettings):
    """The whole configuration of one watchdog."""

    model_config = SettingsConfigDict(
        env_prefix="WATCHDOG_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    prometheus: PrometheusConfig = PrometheusConfig()
    evaluation_interval: PositiveDuration = 30.0
    listen: str = "127.0.0.1:9309"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metric: str = "ml_pipeline_last_success_timestamp"
    pipeline_label: str = "pipeline"
    carry_labels: list[str] = []
    pushgateway_signals: bool = False
    source_failure_alert_after: Annotated[int, Field(ge=0)] = 5
    defaults: PipelineDefaults = PipelineDefaults()
    discovery: DiscoveryConfig = DiscoveryConfig()
    pipelines: list[PipelineConfig] = []
    checks: list[CheckConfig] = []
    receivers: list[ReceiverConfig] = []

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file arrives as init values; listing the environment first makes it win.
        return (env_settings, init_settings)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        parse_listen(listen)
        return listen

    @field_validator("pipeline_label")
    @classmethod
    def _label_name(cls, label: str) -> str:
        if not _LABEL_NAME.match(label) or label.startswith("__"):
            raise ValueError(f"invalid label name {label!r}")
        return label

    @field_validator("metric")
    @classmethod
    def _metric_name(cls, metric: str) -> str:
        if not _METRIC_NAME.match(metric):
            raise ValueError(f"invalid metric name {metric!r}")
        return metric

    @field_validator("carry_labels")
    @classmethod
    def _carried_label_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _LABEL_NAME.match(name):
                raise ValueError(f"invalid label name {name!r}")
        return names

    @field_validator("pipelines")
    @classmethod
    def _unique_pipelines(cls, pipelines: list[PipelineConfig]) -> list[PipelineConfig]:
        _unique([p.name for p in pipelines if p.name is not None])
        _no_dependency_cycle(pipelines)
        return pipelines

    @field_validator("receivers", "checks")
    @classmethod
    def _unique_names(cls, items: list[Any]) -> list[Any]:
        _unique([item.name for item in items])
        return items


def _unique(names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate name {name!r}")
        seen.add(name)


def _no_dependency_cycle(pipelines: list[PipelineConfig]) -> None:
    """Reject ``depends_on`` loops: pipelines holding each other back would never page."""
    upstreams = {p.name: p.depends_on for p in pipelines if p.name is not None}
    for start in upstreams:
        path = [start]
        stack = [(start, iter(upstreams[start]))]
        while stack:
            _, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
            elif child in path:
                loop = " -> ".join([*path[path.index(child) :], child])
                raise ValueError(f"depends_on forms a cycle: {loop}")
            elif child in upstreams:
                path.append(child)
                stack.append((child, iter(upstreams[child])))


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:9309`` for IPv6); raise ValueError if it is not one."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid listen address {listen!r} (expected host:port)")
    return host.strip("[]"), int(port)


def load_settings(path: Path | str) -> Settings:
    """Read, merge and validate the configuration; raise ConfigError listing every problem."""
    data = _read_yaml(Path(path))
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError([_describe(error) for error in exc.errors()]) from None

    _check_url_files(settings)
    return settings


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read config file {str(path)!r}: {exc.strerror}"]) from None

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        position = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}: invalid YAML{position}: {problem}"]) from None

    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of settings"])
    return data


def _check_url_files(settings: Settings) -> None:
    problems = []
    for index, receiver in enumerate(settings.receivers):
        if receiver.url_file is None:
            continue
        try:
            _check_receiver_url(receiver.resolve_url())
        except OSError as exc:
            problems.append(
                f"receivers[{index}].url_file: cannot read {str(receiver.url_file)!r}: "
                f"{exc.strerror}"
            )
        except ValueError as exc:
            problems.append(f"receivers[{index}].url_file: {exc}")
    if problems:
        raise ConfigError(problems)


def _describe(error: Any) -> str:
    """One line for one pydantic error: ``pipelines[2].max_age: invalid duration '2 hours'``."""
    location = _location(error["loc"])
    kind = error["type"]

    if kind == "value_error":
        message = str(error["ctx"]["error"])
    elif kind == "extra_forbidden":
        message = "unknown setting"
    elif kind == "missing":
        message = "required"
    elif kind == "union_tag_invalid":
        tag, expected = error["ctx"]["tag"], error["ctx"]["expected_tags"]
        message = f"unknown type {tag!r} (expected {expected})"
    elif kind == "union_tag_not_found":
        message = "'type' is required (webhook or slack)"
    else:
        message = error["msg"][0].lower() + error["msg"][1:]
    return f"{location}: {message}" if location else message


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("webhook", "slack") and text.endswith("]"):
            continue  # the discriminator pydantic inserts for tagged unions
        else:
            text += f".{part}" if text else str(part)
    return text
