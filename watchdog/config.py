"""Configuration: a YAML file, overridden by ``WATCHDOG_*`` environment variables.

Every key can be set from the environment with the prefix ``WATCHDOG_`` and ``__``
between nesting levels (``WATCHDOG_PROMETHEUS__URL``); lists take JSON
(``WATCHDOG_PIPELINES='[{"name": "train", "max_age": "1h"}]'``).  The environment
wins over the file.  Problems are reported as one line each, naming the field.
"""

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import yaml
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

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


# Header names are RFC 9110 tokens: https://www.rfc-editor.org/rfc/rfc9110#section-5.6.2
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Header values stay printable ASCII on one line: requests refuses anything else at send
# time, with an error that quotes the value (a secret).
_HEADER_VALUE = re.compile(r"^[\x20-\x7e]+$")
# Set by the client itself for the form it posts; replacing them would break the query.
_RESERVED_HEADERS = frozenset(
    {"connection", "content-length", "content-type", "transfer-encoding"}
)


@dataclass(frozen=True)
class FileSecret:
    """A secret read from a file when the configuration is loaded (a Kubernetes Secret
    volume, say).  Surrounding whitespace, such as a final newline, is removed."""

    path: Path
    value: SecretStr

    def __str__(self) -> str:
        return str(self.path)


def _read_secret_file(value: object) -> FileSecret:
    if isinstance(value, FileSecret):
        return value
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError("must be a file path")

    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"cannot read {str(path)!r}: not UTF-8 text") from None

    if not text:
        raise ValueError(f"{str(path)!r} is empty")
    return FileSecret(path, SecretStr(text))


def _one_of(model: BaseModel, inline: str, file: str, *, required: bool) -> None:
    """A secret given inline or from its file: never both; with ``required``, one of them."""
    given = [getattr(model, inline) is not None, getattr(model, file) is not None]
    if all(given):
        raise ValueError(f"set only one of {inline} and {file}")
    if required and not any(given):
        raise ValueError(f"set exactly one of {inline} and {file}")


def _secret(inline: SecretStr | None, file: FileSecret | None) -> str | None:
    """The secret's text, from its file (read when the configuration was loaded) or inline."""
    if file is not None:
        return file.value.get_secret_value()
    return None if inline is None else inline.get_secret_value()


def _text_only(value: object) -> object:
    # YAML reads an unquoted 0123 as the number 83: refuse numbers rather than guess.
    if not isinstance(value, str | SecretStr):
        raise ValueError("must be a string (quote it in YAML)")
    return value


def _header_value(secret: SecretStr) -> SecretStr:
    text = secret.get_secret_value().strip()
    if not text:
        raise ValueError("must not be empty")
    if not _HEADER_VALUE.match(text):
        raise ValueError("must be printable ASCII on one line (it is sent in an HTTP header)")
    return SecretStr(text)


def _header_file(secret: FileSecret) -> FileSecret:
    if not _HEADER_VALUE.match(secret.value.get_secret_value()):
        raise ValueError(
            f"{str(secret.path)!r} must hold printable ASCII on one line "
            "(it is sent in an HTTP header)"
        )
    return secret


def _non_empty(secret: SecretStr) -> SecretStr:
    if not secret.get_secret_value():
        raise ValueError("must not be empty")
    return secret


SecretFile = Annotated[FileSecret, PlainValidator(_read_secret_file), PlainSerializer(str)]
HeaderSecret = Annotated[SecretStr, BeforeValidator(_text_only), AfterValidator(_header_value)]
HeaderSecretFile = Annotated[SecretFile, AfterValidator(_header_file)]
Password = Annotated[SecretStr, BeforeValidator(_text_only), AfterValidator(_non_empty)]


def _readable(path: Path) -> Path:
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    return path


ReadableFile = Annotated[Path, AfterValidator(_readable)]


class BasicAuthConfig(_Section):
    """HTTP basic authentication; the password inline or from a file."""

    username: Annotated[str, Field(min_length=1)]
    password: Password | None = None
    password_file: SecretFile | None = None

    @field_validator("username")
    @classmethod
    def _no_colon(cls, username: str) -> str:
        # RFC 7617: the user-id ends at the first colon.
        if ":" in username or not username.isprintable():
            raise ValueError("must be printable and hold no ':'")
        return username

    @model_validator(mode="after")
    def _one_password(self) -> "BasicAuthConfig":
        _one_of(self, "password", "password_file", required=True)
        return self

    def resolve_password(self) -> str:
        return _secret(self.password, self.password_file) or ""


class TLSConfig(_Section):
    """How to check the server's certificate, and the client certificate to show it.

    Verification is on unless ``insecure_skip_verify``; without ``ca_file`` the
    server must present a certificate from a public CA (the bundle requests uses).
    The files are checked when the configuration is loaded and read again by each
    new connection, so a renewed certificate is picked up without a restart.
    """

    ca_file: ReadableFile | None = None
    cert_file: ReadableFile | None = None
    key_file: ReadableFile | None = None
    insecure_skip_verify: bool = False

    @field_validator("ca_file")
    @classmethod
    def _pem_bundle(cls, path: Path) -> Path:
        try:
            ssl.create_default_context(cafile=str(path))
        except (ssl.SSLError, ValueError):
            raise ValueError(f"no PEM certificate in {str(path)!r}") from None
        return path

    @model_validator(mode="after")
    def _key_pair(self) -> "TLSConfig":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set cert_file and key_file together")
        if self.cert_file is not None and self.key_file is not None:
            _check_key_pair(self.cert_file, self.key_file)
        return self

    @property
    def in_use(self) -> bool:
        return self != TLSConfig()


class _EncryptedKey(Exception):
    pass


def _refuse_passphrase() -> str:
    # Without a callback OpenSSL would ask for the passphrase on the terminal.
    raise _EncryptedKey


def _check_key_pair(cert_file: Path, key_file: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert_file, key_file, password=_refuse_passphrase)
    except _EncryptedKey:
        raise ValueError(
            f"key_file {str(key_file)!r} is encrypted; give a key without a passphrase"
        ) from None
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ValueError("key_file does not match cert_file") from None
        raise ValueError(
            "cert_file and key_file must be a PEM certificate and its PEM private key"
        ) from None


class _HttpCredentials(_Section):
    """Extra headers and authentication for an HTTP endpoint, shared by the Prometheus
    client and webhook receivers.  Every value is a secret with a ``*_file`` twin."""

    # Headers the watchdog sets itself, which the configuration must not.
    reserved_headers: ClassVar[frozenset[str]] = _RESERVED_HEADERS

    headers: dict[str, HeaderSecret] = {}
    header_files: dict[str, HeaderSecretFile] = {}
    bearer_token: HeaderSecret | None = None
    bearer_token_file: HeaderSecretFile | None = None
    basic_auth: BasicAuthConfig | None = None

    @field_validator("headers", "header_files")
    @classmethod
    def _header_names(cls, headers: dict[str, Any]) -> dict[str, Any]:
        for name in headers:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"invalid header name {name!r}")
            if name.lower() in cls.reserved_headers:
                raise ValueError(f"{name} is set by the watchdog itself")
        return headers

    @model_validator(mode="after")
    def _one_way_each_credential(self) -> "_HttpCredentials":
        _one_of(self, "bearer_token", "bearer_token_file", required=False)
        if self.basic_auth is not None and self._bearer_token() is not None:
            raise ValueError("set only one of bearer_token and basic_auth")

        named = [name.lower() for name in [*self.headers, *self.header_files]]
        twice = sorted({name for name in named if named.count(name) > 1})
        if twice:
            raise ValueError(f"header {twice[0]!r} is set in both headers and header_files")
        if "authorization" in named and (self.basic_auth or self._bearer_token()):
            raise ValueError("Authorization is set in headers and by bearer_token or basic_auth")
        return self

    def request_headers(self) -> dict[str, str]:
        """The configured headers and the bearer token, as sent: keep them out of logs.
        (``basic_auth`` is added by the HTTP session.)"""
        headers = {name: value.get_secret_value() for name, value in self.headers.items()}
        for name, secret in self.header_files.items():
            headers[name] = secret.value.get_secret_value()

        token = self._bearer_token()
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def secret_values(self) -> list[str]:
        """Every secret as sent, so that what is reported can be kept free of them."""
        values = list(self.request_headers().values())
        token = self._bearer_token()
        if token is not None:
            values.append(token)
        if self.basic_auth is not None:
            values.append(self.basic_auth.resolve_password())
        return values

    def _bearer_token(self) -> str | None:
        return _secret(self.bearer_token, self.bearer_token_file)


class PrometheusConfig(_HttpCredentials):
    """Where to query, how long one query may take, and how to authenticate.

    Secrets (``bearer_token``, ``basic_auth.password``, header values) are
    ``SecretStr`` and each has a ``*_file`` twin read at load time.  Credentials in
    the URL (``https://user:pass@host``) move to ``basic_auth``, so that the URL
    itself never holds a secret.
    """

    url: str = "http://127.0.0.1:9090"
    timeout: PositiveDuration = 10.0
    tls: TLSConfig = TLSConfig()

    @model_validator(mode="before")
    @classmethod
    def _credentials_from_url(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return data
        parts = urlsplit(data["url"])
        if "@" not in parts.netloc:
            return data

        userinfo, _, host = parts.netloc.rpartition("@")
        username, has_password, password = userinfo.partition(":")
        if not has_password or data.get("basic_auth") is not None:
            return data  # _http_url says what is wrong, under the url's name
        url = urlunsplit(parts._replace(netloc=host))
        basic_auth = {"username": unquote(username), "password": unquote(password)}
        return {**data, "url": url, "basic_auth": basic_auth}

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("must be an http:// or https:// URL")
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises for a port that is not a number
        except ValueError:
            # Never echo the text: it may be part of a password with an unescaped / ? #.
            raise ValueError(
                "has no valid host:port (percent-encode / ? # in a password)"
            ) from None
        if parts.query or parts.fragment:
            raise ValueError("must not have a query string or fragment")

        # Credentials _credentials_from_url left in place; never echo them.
        userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
        if at and ":" not in userinfo:
            raise ValueError("has a user name without a password; use basic_auth")
        if at:
            raise ValueError("holds credentials and basic_auth is set too; keep one")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _tls_needs_https(self) -> "PrometheusConfig":
        if self.tls.in_use and not self.url.startswith("https://"):
            raise ValueError("tls only applies to an https:// url")
        return self


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
    for_: Annotated[Duration, Field(alias="for")] = 0.0
    warn_after: PositiveDuration | None = None
    keep_firing_for: Duration = 0.0
    repeat_interval: Duration = 14400.0

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
    for_: Annotated[Duration | None, Field(alias="for")] = None
    warn_after: PositiveDuration | None = None
    keep_firing_for: Duration | None = None
    repeat_interval: Duration | None = None

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


Severity = Literal["warning", "critical"]


class RouteMatch(_Section):
    """Which alerts a receiver gets; every condition given must hold."""

    pipelines: list[str] = []
    pipeline_regex: str | None = None
    severity: list[Severity] = []
    labels: dict[str, str] = {}

    @field_validator("pipeline_regex")
    @classmethod
    def _regex(cls, pattern: str) -> str:
        return _check_regex(pattern)


class _ReceiverConfig(_Section):
    name: Annotated[str, Field(min_length=1)]
    url: SecretStr | None = None
    url_file: Path | None = None
    timeout: PositiveDuration = 10.0
    send_resolved: bool = True
    match: RouteMatch | None = None
    default: bool = False
    group_by: list[str] = []
    max_alerts: Annotated[int, Field(ge=1, le=1000)] = 40

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: SecretStr) -> SecretStr:
        _check_receiver_url(url.get_secret_value())
        return url

    @model_validator(mode="after")
    def _one_url(self) -> "_ReceiverConfig":
        if (self.url is None) == (self.url_file is None):
            raise ValueError("set exactly one of url and url_file")
        if self.default and self.match is not None:
            raise ValueError("a default receiver takes what no other receiver matched: no match")
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


# Set by the watchdog on every webhook request: the idempotency key and the signature.
_WEBHOOK_HEADERS = frozenset({"idempotency-key", "x-watchdog-timestamp", "x-watchdog-signature"})


class WebhookReceiverConfig(_ReceiverConfig, _HttpCredentials):
    """A JSON webhook: the watchdog's own body (schema in the README), or the body
    Alertmanager's webhook sends (``format: alertmanager``).

    Secrets (header values, ``bearer_token``, ``basic_auth.password``,
    ``hmac_secret``) are ``SecretStr`` and each has a ``*_file`` twin read at load
    time.  With an HMAC secret each request is signed when it is sent.
    """

    reserved_headers: ClassVar[frozenset[str]] = _RESERVED_HEADERS | _WEBHOOK_HEADERS

    type: Literal["webhook"]
    format: Literal["watchdog", "alertmanager"] = "watchdog"
    external_url: str | None = None  # the watchdog as people reach it, for links
    hmac_secret: Password | None = None
    hmac_secret_file: SecretFile | None = None

    @field_validator("external_url")
    @classmethod
    def _plain_url(cls, url: str) -> str:
        # Sent in every body: it must hold nothing secret.
        parts = urlsplit(url)
        plain = "@" not in parts.netloc and not parts.query and not parts.fragment
        if not re.match(r"^https?://[^/\s]+", url) or not plain:
            raise ValueError("must be an http:// or https:// URL without credentials or query")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _signing_and_format(self) -> "WebhookReceiverConfig":
        _one_of(self, "hmac_secret", "hmac_secret_file", required=False)
        if self.external_url is not None and self.format != "alertmanager":
            raise ValueError("external_url only applies to format: alertmanager")
        return self

    def resolve_hmac_secret(self) -> str | None:
        return _secret(self.hmac_secret, self.hmac_secret_file)

    def secret_values(self) -> list[str]:
        values = super().secret_values()
        hmac_secret = self.resolve_hmac_secret()
        return values if hmac_secret is None else [*values, hmac_secret]


class SlackReceiverConfig(_ReceiverConfig):
    """A Slack incoming webhook."""

    type: Literal["slack"]


class PagerDutyReceiverConfig(_ReceiverConfig):
    """PagerDuty Events API v2: one event per alert.

    ``url`` is the events endpoint and has no default (PagerDuty's is
    ``https://events.pagerduty.com/v2/enqueue``, its EU service's
    ``https://events.eu.pagerduty.com/v2/enqueue``).  ``routing_key`` is the
    integration key of the service to page, a secret; its length is not checked.
    """

    type: Literal["pagerduty"]
    routing_key: Password | None = None
    routing_key_file: SecretFile | None = None
    # Each alert is its own event: an alert left out of a notification is never paged.
    max_alerts: Annotated[int, Field(ge=1, le=1000)] = 1000

    @model_validator(mode="after")
    def _one_routing_key(self) -> "PagerDutyReceiverConfig":
        _one_of(self, "routing_key", "routing_key_file", required=True)
        return self

    def resolve_routing_key(self) -> str:
        return _secret(self.routing_key, self.routing_key_file) or ""


class AlertmanagerReceiverConfig(_ReceiverConfig):
    """A Prometheus Alertmanager: alerts are pushed to its ``/api/v2/alerts``.

    ``url`` is Alertmanager's base URL (``http://alertmanager:9093``, plus its
    ``--web.route-prefix`` if it has one).  Firing alerts are sent again every
    cycle; resolved ones for ``resolved_resend_for`` after they resolved (15
    minutes, as Prometheus does), so that a restarted Alertmanager still learns
    of the all-clear.  ``send_resolved: false`` sends no resolutions: an alert
    then ends in Alertmanager when its ``endsAt`` passes.  ``basic_auth`` is for an
    Alertmanager started with ``--web.config.file``.  ``group_by`` and
    ``max_alerts`` do not apply: Alertmanager groups alerts itself.
    """

    type: Literal["alertmanager"]
    resolved_resend_for: Duration = 900.0
    basic_auth: BasicAuthConfig | None = None


ReceiverConfig = Annotated[
    WebhookReceiverConfig
    | SlackReceiverConfig
    | PagerDutyReceiverConfig
    | AlertmanagerReceiverConfig,
    Field(discriminator="type"),
]


class DeliveryConfig(_Section):
    """How hard the watchdog tries to deliver one notification."""

    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 20
    max_age: PositiveDuration = 21600.0  # a notification older than this is given up
    initial_backoff: PositiveDuration = 1.0
    max_backoff: PositiveDuration = 300.0
    shutdown_timeout: Duration = 10.0  # time the outbox gets to drain on SIGTERM


class HeartbeatConfig(_Section):
    """A dead-man's switch: a URL pinged (POST) after each successful evaluation.

    A healthchecks-style service then notices a watchdog that has died.
    """

    url: SecretStr | None = None
    url_file: SecretFile | None = None
    timeout: PositiveDuration = 10.0

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: SecretStr) -> SecretStr:
        _check_receiver_url(url.get_secret_value())
        return url

    @model_validator(mode="after")
    def _one_url(self) -> "HeartbeatConfig":
        _one_of(self, "url", "url_file", required=True)
        return self

    def resolve_url(self) -> str:
        return _secret(self.url, self.url_file) or ""


class StateConfig(_Section):
    """Where alert state and silences are kept across restarts (a SQLite file)."""

    path: Path = Path("/var/lib/pipeline-watchdog/state.db")


class ApiConfig(_Section):
    """The token that protects the HTTP API's writes; without one they are disabled."""

    token: HeaderSecret | None = None
    token_file: HeaderSecretFile | None = None

    @model_validator(mode="after")
    def _one_token(self) -> "ApiConfig":
        _one_of(self, "token", "token_file", required=False)
        return self

    def resolve_token(self) -> str | None:
        return _secret(self.token, self.token_file)


class MatcherConfig(_Section):
    """One label matcher of a silence, as in Alertmanager: name, value, regex, equality."""

    name: Annotated[str, Field(min_length=1)]
    value: str
    is_regex: bool = False
    is_equal: bool = True

    @model_validator(mode="after")
    def _valid_regex(self) -> "MatcherConfig":
        if self.is_regex:
            _check_regex(self.value)
        return self


class SilenceConfig(_Section):
    """A silence written in the configuration: matching alerts send nothing meanwhile."""

    matchers: Annotated[list[MatcherConfig], Field(min_length=1)]
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime
    comment: Annotated[str, Field(min_length=1)]
    created_by: str = "config"

    @model_validator(mode="after")
    def _ends_after_start(self) -> "SilenceConfig":
        if self.starts_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if all(_matches_empty(m) for m in self.matchers):
            # As Alertmanager refuses: such a silence would mute every alert.
            raise ValueError("its matchers match every alert; name something to silence")
        return self


def _matches_empty(matcher: MatcherConfig) -> bool:
    """Whether the matcher holds for an alert without the label (value "")."""
    empty = matcher.value == ""
    hit = re.fullmatch(matcher.value, "") is not None if matcher.is_regex else empty
    return hit == matcher.is_equal


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
    log_format: Literal["text", "json"] = "text"
    heartbeat: HeartbeatConfig | None = None
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
    delivery: DeliveryConfig = DeliveryConfig()
    state: StateConfig = StateConfig()
    api: ApiConfig = ApiConfig()
    silences: list[SilenceConfig] = []

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
    bracketed = host.startswith("[") and host.endswith("]")
    valid_port = port.isascii() and port.isdigit() and int(port) <= 65535
    if not sep or not host or not valid_port or (":" in host and not bracketed):
        raise ValueError(
            f"invalid listen address {listen!r} (expected host:port, [ipv6]:port for IPv6)"
        )
    return host.strip("[]"), int(port)


def load_settings(path: Path | str) -> Settings:
    """Read, merge and validate the configuration; raise ConfigError listing every problem."""
    data = _read_yaml(Path(path))
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError([_describe(error) for error in exc.errors()]) from None
    except SettingsError as exc:
        # Raised for an environment variable whose value should be JSON but is not.
        field = re.search(r'field "([^"]+)"', str(exc))
        name = field.group(1) if field else "a setting"
        raise ConfigError(
            [f"{name}: WATCHDOG_{name.upper()} from the environment is not valid JSON"]
        ) from None

    _check_url_files(settings)
    return settings


def unknown_environment(environ: Mapping[str, str] = os.environ) -> list[str]:
    """``WATCHDOG_*`` variables that name no setting: most likely typos.

    Only reported, never refused: Kubernetes injects ``<SERVICE>_PORT`` and the like
    for every Service, so a Service called ``watchdog`` produces such variables.
    """
    known = {f"WATCHDOG_{name.upper()}" for name in Settings.model_fields}
    return sorted(
        name
        for name in environ
        if name.upper().startswith("WATCHDOG_") and name.upper().split("__")[0] not in known
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read config file {str(path)!r}: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        position = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}: invalid YAML{position}: {problem}"]) from None
    except ValueError as exc:
        # PyYAML converts numbers itself; a 5000-digit one fails outside its own errors.
        raise ConfigError([f"{path}: invalid YAML: {str(exc)[:100]}"]) from None

    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of settings"])
    odd = [key for key in data if not isinstance(key, str)]
    if odd:
        raise ConfigError([f"{path}: setting names must be text, not {odd[0]!r}"])
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
        message = "'type' is required (webhook, slack, pagerduty or alertmanager)"
    else:
        message = error["msg"][0].lower() + error["msg"][1:]
    return f"{location}: {message}" if location else message


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("webhook", "slack", "pagerduty", "alertmanager") and text.endswith("]"):
            continue  # the discriminator pydantic inserts for tagged unions
        else:
            text += f".{part}" if text else str(part)
    return text
