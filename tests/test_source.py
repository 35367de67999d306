"""The source side: Prometheus-compatible backends, authentication, TLS, and how
query failures are told apart.

Real servers on 127.0.0.1, each started once for the module: Prometheus serving
HTTPS with basic auth (the bcrypt hash is the example of Prometheus's own guide),
Prometheus asking for a client certificate, Prometheus with a tiny query timeout,
and VictoriaMetrics.  Certificates are made per run with the openssl tool.
Headers and odd answers are checked against a RecordingReceiver.
"""

import base64
import logging
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.receiver import RecordingReceiver
from testbed.servers import (
    PROMETHEUS_GUIDE_USER,
    CertificateFiles,
    PrometheusServer,
    TLSPrometheusServer,
    VictoriaMetricsServer,
    free_port,
    make_certificates,
)
from watchdog.config import PrometheusConfig, Settings, load_settings
from watchdog.exceptions import (
    SOURCE_ERROR_KINDS,
    ConfigError,
    InvalidResponse,
    QueryFailed,
    SourceError,
    SourceUnavailable,
)
from watchdog.freshness import FreshnessState
from watchdog.prometheus import PrometheusClient, parse_query_response
from watchdog.service import Watchdog

WRONG_PASSWORD = "wr0ng-Pa55-7f3c"
TOKEN = "tok-1b9e7c2d5a"

VECTOR_BODY = (
    b'{"status":"success","data":{"resultType":"vector","result":['
    b'{"metric":{},"value":[1796402155.253,"1796402155.253"]}]}}'
)
JSON = {"Content-Type": "application/json"}

# Prometheus evaluates a binary expression's sides in turn and checks its deadline
# before each: the left side (~0.4 s here) outlasts a 20 ms --query.timeout.
SLOW_EXPR = "count_over_time(vector(1)[10d:1s]) + vector(1)"

WriteConfig = Callable[..., Path]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_prometheus(
    tmp_path_factory: pytest.TempPathFactory, certificates: CertificateFiles
) -> Iterator[TLSPrometheusServer]:
    work_dir = tmp_path_factory.mktemp("secure-prometheus")
    with TLSPrometheusServer(work_dir, certificates, user=PROMETHEUS_GUIDE_USER) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_prometheus(
    tmp_path_factory: pytest.TempPathFactory, certificates: CertificateFiles
) -> Iterator[TLSPrometheusServer]:
    work_dir = tmp_path_factory.mktemp("mtls-prometheus")
    with TLSPrometheusServer(work_dir, certificates, require_client_cert=True) as server:
        yield server


@pytest.fixture(scope="module")
def hasty_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    work_dir = tmp_path_factory.mktemp("hasty-prometheus")
    with PrometheusServer(work_dir, extra_args=["--query.timeout=20ms"]) as server:
        yield server


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetricsServer]:
    # The testbed starts it with -search.latencyOffset=0s -search.maxStalenessInterval=5m.
    with VictoriaMetricsServer(tmp_path_factory.mktemp("victoria-metrics")) as server:
        yield server


def client_for(**prometheus: Any) -> PrometheusClient:
    return PrometheusClient.from_config(PrometheusConfig(**prometheus))


def trusted(certificates: CertificateFiles, **tls: Any) -> dict[str, Any]:
    return {"ca_file": str(certificates.ca_file), **tls}


def failure_of(client: PrometheusClient, expr: str = "vector(1)") -> SourceError:
    with pytest.raises(SourceError) as caught:
        client.query(expr)
    return caught.value


def problems(write_config: WriteConfig, prometheus: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config({"prometheus": prometheus}))
    return caught.value.problems


# TLS and basic auth against a real Prometheus


def test_verification_is_on_by_default_and_refuses_a_private_ca(
    secure_prometheus: TLSPrometheusServer,
) -> None:
    client = client_for(url=secure_prometheus.url)

    error = failure_of(client)

    assert isinstance(error, SourceUnavailable)
    assert error.kind == "unavailable"
    assert str(error) == "TLS certificate not trusted: unable to get local issuer certificate"


def test_ca_file_and_right_password_from_a_file_query_over_https(
    secure_prometheus: TLSPrometheusServer,
    certificates: CertificateFiles,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    password_file = tmp_path / "prometheus-password"
    password_file.write_text(PROMETHEUS_GUIDE_USER.password + "\n")
    basic_auth = {"username": PROMETHEUS_GUIDE_USER.username, "password_file": str(password_file)}
    path = write_config(
        {
            "prometheus": {
                "url": secure_prometheus.url,
                "basic_auth": basic_auth,
                "tls": trusted(certificates),
            }
        }
    )
    client = PrometheusClient.from_config(load_settings(path).prometheus)

    result = client.query("vector(1)")

    assert [sample.value for sample in result.samples] == [1.0]
    assert result.evaluated_at == pytest.approx(time.time(), abs=5)
    assert not result.partial


def test_wrong_password_is_unauthorized_and_never_shown(
    secure_prometheus: TLSPrometheusServer,
    certificates: CertificateFiles,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # Credentials in the URL are moved to basic_auth, so the URL logged holds none.
    url = secure_prometheus.url.replace("://", f"://admin:{WRONG_PASSWORD}@")
    settings = Settings(prometheus={"url": url, "tls": trusted(certificates)})
    client = PrometheusClient.from_config(settings.prometheus)

    error = failure_of(client)

    assert isinstance(error, QueryFailed)
    assert (error.kind, error.error_type, error.status_code) == (
        "unauthorized",
        "unauthorized",
        401,
    )
    assert (
        str(error) == "HTTP 401: credentials missing or refused (the server said 'Unauthorized')"
    )
    header = base64.b64encode(f"admin:{WRONG_PASSWORD}".encode()).decode()
    for shown in (str(error), caplog.text, repr(settings), str(settings.model_dump())):
        assert WRONG_PASSWORD not in shown
        assert header not in shown
    assert "POST /api/v1/query" in caplog.text  # urllib3 did log the request


def test_missing_credentials_are_unauthorized(
    secure_prometheus: TLSPrometheusServer, certificates: CertificateFiles
) -> None:
    client = client_for(url=secure_prometheus.url, tls=trusted(certificates))

    error = failure_of(client)

    assert isinstance(error, QueryFailed)
    assert error.kind == "unauthorized"


def test_insecure_skip_verify_accepts_an_untrusted_server_and_says_so_once(
    secure_prometheus: TLSPrometheusServer, caplog: pytest.LogCaptureFixture
) -> None:
    user = PROMETHEUS_GUIDE_USER
    client = client_for(
        url=secure_prometheus.url,
        basic_auth={"username": user.username, "password": user.password},
        tls={"insecure_skip_verify": True},
    )

    first = client.query("vector(1)")
    second = client.query("vector(2)")

    assert [first.samples[0].value, second.samples[0].value] == [1.0, 2.0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "TLS certificate verification is off for Prometheus (prometheus.tls.insecure_skip_verify)"
    ]


def test_client_certificate_is_shown_when_configured(
    mtls_prometheus: TLSPrometheusServer, certificates: CertificateFiles
) -> None:
    with_cert = client_for(
        url=mtls_prometheus.url,
        tls=trusted(
            certificates,
            cert_file=str(certificates.client_cert),
            key_file=str(certificates.client_key),
        ),
    )
    without_cert = client_for(url=mtls_prometheus.url, tls=trusted(certificates))

    result = with_cert.query("vector(1)")
    error = failure_of(without_cert)

    assert result.samples[0].value == 1.0
    assert isinstance(error, SourceUnavailable)
    assert error.kind == "unavailable"
    assert str(error).startswith("TLS handshake failed")
    assert "client certificate" in str(error)


# Failures told apart


def test_prometheus_timeout_and_bad_query_have_their_own_error_types(
    hasty_prometheus: PrometheusServer,
) -> None:
    client = client_for(url=hasty_prometheus.url, timeout="10s")

    timed_out = failure_of(client, SLOW_EXPR)
    bad = failure_of(client, "max by (")

    assert isinstance(timed_out, QueryFailed)
    assert (timed_out.kind, timed_out.error_type, timed_out.status_code) == (
        "query_error",
        "timeout",
        503,
    )
    assert str(timed_out) == "HTTP 503, timeout: query timed out in expression evaluation"
    assert isinstance(bad, QueryFailed)
    assert (bad.kind, bad.error_type, bad.status_code) == ("query_error", "bad_data", 400)


def test_no_answer_in_time_is_a_timeout() -> None:
    with RecordingReceiver(delay=3) as silent:
        client = client_for(url=silent.url(""), timeout="300ms")

        started = time.monotonic()
        error = failure_of(client)
        waited = time.monotonic() - started

    assert isinstance(error, SourceUnavailable)
    assert (error.kind, error.timed_out) == ("timeout", True)
    assert str(error) == "no answer within 0.3s"
    assert waited < 2


def test_nothing_listening_is_unavailable() -> None:
    client = client_for(url=f"http://127.0.0.1:{free_port()}")

    error = failure_of(client)

    assert (error.kind, str(error)) == ("unavailable", "connection refused")


def test_https_to_a_plain_http_server_says_it_does_not_speak_tls() -> None:
    with RecordingReceiver() as plain:
        client = client_for(url=plain.url("").replace("http://", "https://"))

        error = failure_of(client)

    assert (error.kind, str(error)) == (
        "unavailable",
        "TLS handshake failed: the server does not speak TLS",
    )


def test_every_kind_is_listed_for_the_metrics() -> None:
    kinds = {
        SourceUnavailable("x").kind,
        SourceUnavailable("x", timed_out=True).kind,
        QueryFailed("x", error_type="forbidden").kind,
        QueryFailed("x", error_type="bad_data").kind,
        InvalidResponse("x").kind,
    }

    assert kinds == set(SOURCE_ERROR_KINDS)


# VictoriaMetrics


def test_watchdog_reads_pipeline_ages_from_victoria_metrics(
    victoria: VictoriaMetricsServer,
) -> None:
    now = int(time.time())
    last_success = {"vm-fresh": now - 600, "vm-stale": now - 3 * 3600}
    lines = [
        f'ml_pipeline_last_success_timestamp{{pipeline="{p}"}} {v}'
        for p, v in last_success.items()
    ]
    exposition = "# TYPE ml_pipeline_last_success_timestamp gauge\n" + "\n".join(lines)
    victoria.import_prometheus(exposition, timestamp=now - 5)
    # A series new to VictoriaMetrics answers queries about 1 s after the flush.
    victoria.wait_for_query('count(ml_pipeline_last_success_timestamp{pipeline=~"vm-.*"}) == 2')
    settings = Settings(
        prometheus={"url": victoria.url, "timeout": "5s"},
        defaults={"max_age": "1h"},
        pipelines=[{"name": "vm-absent"}],
    )
    watchdog = Watchdog(settings)

    before = time.time()
    latest = watchdog.evaluate().statuses
    after = time.time()
    pinned = watchdog.evaluate(at=now - 0.75).statuses

    assert {name: s.state for name, s in latest.items()} == {
        "vm-fresh": FreshnessState.fresh,
        "vm-stale": FreshnessState.stale,
        "vm-absent": FreshnessState.missing,
    }
    fresh = latest["vm-fresh"]
    assert fresh.last_success == now - 600
    # The server's evaluation time, which VictoriaMetrics rounds to a whole second.
    assert before - 1 <= fresh.evaluated_at <= after + 1
    assert pinned["vm-fresh"].evaluated_at == now - 0.75
    assert pinned["vm-fresh"].age == pytest.approx(600 - 0.75)
    assert pinned["vm-stale"].age == pytest.approx(3 * 3600 - 0.75)


def test_victoria_metrics_errors_keep_their_status_as_error_type(
    victoria: VictoriaMetricsServer,
) -> None:
    client = client_for(url=victoria.url)

    error = failure_of(client, "max by (")

    assert isinstance(error, QueryFailed)
    assert (error.kind, error.error_type, error.status_code) == ("query_error", "422", 422)
    assert "\n" not in str(error)


# What goes out with each query, seen by a receiver


def test_headers_and_bearer_token_from_files_arrive(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "api-key").write_text("key-from-file")
    with RecordingReceiver() as backend:
        backend.respond_with(200, VECTOR_BODY, JSON)
        path = write_config(
            {
                "prometheus": {
                    "url": backend.url("/prometheus"),
                    "headers": {"X-Scope-OrgID": "team-a"},
                    "header_files": {"X-Api-Key": str(tmp_path / "api-key")},
                    "bearer_token_file": str(tmp_path / "token"),
                }
            }
        )
        client = PrometheusClient.from_config(load_settings(path).prometheus)

        client.query("up", at=1796402155.25)
        request = backend.requests()[0]

    assert request.path == "/prometheus/api/v1/query"
    assert request.headers["x-scope-orgid"] == "team-a"
    assert request.headers["x-api-key"] == "key-from-file"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["user-agent"].startswith("pipeline-watchdog/")
    assert b"time=1796402155.250" in request.body


def test_bearer_token_comes_from_the_environment(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_PROMETHEUS__BEARER_TOKEN", TOKEN)
    with RecordingReceiver() as backend:
        backend.respond_with(200, VECTOR_BODY, JSON)
        settings = load_settings(write_config({"prometheus": {"url": backend.url("")}}))

        PrometheusClient.from_config(settings.prometheus).query("up")
        request = backend.requests()[0]

    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in repr(settings)


def test_basic_auth_password_is_sent_as_utf8() -> None:
    with RecordingReceiver() as backend:
        backend.respond_with(200, VECTOR_BODY, JSON)
        client = client_for(
            url=backend.url(""), basic_auth={"username": "wächter", "password": "pässwort"}
        )

        client.query("up")
        request = backend.requests()[0]

    scheme, _, encoded = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode("utf-8") == "wächter:pässwort"


def test_secret_echoed_by_the_server_is_blanked_from_the_reason() -> None:
    with RecordingReceiver() as backend:
        backend.respond_with(403, f"token {TOKEN} may not read tenant team-a")
        client = client_for(url=backend.url(""), bearer_token=TOKEN)

        error = failure_of(client)

    assert isinstance(error, QueryFailed)
    assert (error.kind, error.error_type) == ("unauthorized", "forbidden")
    assert TOKEN not in str(error)
    assert "token <secret> may not read tenant team-a" in str(error)


def test_redirect_is_not_followed_so_credentials_stay_put() -> None:
    with RecordingReceiver() as elsewhere, RecordingReceiver() as backend:
        backend.respond_with(302, "", {"Location": elsewhere.url("/api/v1/query")})
        client = client_for(url=backend.url(""), headers={"X-Api-Key": "key-1"})

        error = failure_of(client)
        followed = elsewhere.requests()

    assert isinstance(error, InvalidResponse)
    assert "redirect" in str(error)
    assert followed == []


def test_missing_query_api_hints_at_the_path_prefix() -> None:
    with RecordingReceiver() as backend:
        backend.respond_with(404, "404 page not found\n")
        client = client_for(url=backend.url("/wrong-prefix"))

        error = failure_of(client)

    assert isinstance(error, InvalidResponse)
    assert "check the path prefix of prometheus.url" in str(error)


# Partial answers (bodies shaped as each backend documents them)


@pytest.mark.parametrize(
    ("extra", "partial"),
    [
        ('"isPartial":true,', True),
        ('"isPartial":false,', False),
        ('"warnings":["Partial response: store 10.0.0.1:10901 unavailable"],', True),
        ('"warnings":["no store matched this query"],', False),
        ("", False),
    ],
)
def test_partial_answers_are_flagged(extra: str, partial: bool) -> None:
    body = (
        '{"status":"success",' + extra + '"data":{"resultType":"vector","result":'
        '[{"metric":{},"value":[1796402155.253,"1"]}]}}'
    )

    result = parse_query_response(200, body.encode())

    assert result.partial is partial
    assert result.samples[0].value == 1.0


def test_victoria_metrics_timeout_error_gets_the_timeout_type() -> None:
    # As VictoriaMetrics 1.79 answered a query that ran out of time.
    body = (
        b'{"status":"error","errorType":"422","error":"error when executing query=\\"x\\" '
        b'for (time=1796403251724, step=300000): cannot evaluate \\"x\\": timeout exceeded '
        b'during query execution: 0.001 seconds (elapsed 1.163 seconds)"}'
    )

    with pytest.raises(QueryFailed) as caught:
        parse_query_response(422, body)

    assert caught.value.error_type == "timeout"
    assert caught.value.kind == "query_error"


# Configuration


@pytest.mark.parametrize(
    ("prometheus", "expected"),
    [
        (
            {"bearer_token": "a", "bearer_token_file": "/etc/token"},
            "prometheus.bearer_token_file: cannot read '/etc/token': No such file or directory",
        ),
        (
            {"bearer_token": "a", "basic_auth": {"username": "u", "password": "p"}},
            "prometheus: set only one of bearer_token and basic_auth",
        ),
        (
            {"basic_auth": {"username": "u"}},
            "prometheus.basic_auth: set exactly one of password and password_file",
        ),
        (
            {"basic_auth": {"username": "u", "password": "p", "password_file": "/dev/null"}},
            "prometheus.basic_auth.password_file: '/dev/null' is empty",
        ),
        (
            {"basic_auth": {"username": "u:v", "password": "p"}},
            "prometheus.basic_auth.username: must be printable and hold no ':'",
        ),
        (
            {"headers": {"X-Scope-OrgID": 123}},
            "prometheus.headers.X-Scope-OrgID: must be a string (quote it in YAML)",
        ),
        (
            {"headers": {"X-Scope-OrgID": "team-a\nX-Admin: yes"}},
            "prometheus.headers.X-Scope-OrgID: must be printable ASCII on one line "
            "(it is sent in an HTTP header)",
        ),
        ({"headers": {"X Scope": "a"}}, "prometheus.headers: invalid header name 'X Scope'"),
        (
            {"headers": {"Content-Type": "text/plain"}},
            "prometheus.headers: Content-Type is set by the watchdog itself",
        ),
        (
            {"headers": {"Authorization": "Basic eA=="}, "bearer_token": "a"},
            "prometheus: Authorization is set in headers and by bearer_token or basic_auth",
        ),
        (
            {"url": "http://u@127.0.0.1:9090"},
            "prometheus.url: has a user name without a password; use basic_auth",
        ),
        (
            {"url": "http://u:p@127.0.0.1:9090", "basic_auth": {"username": "v", "password": "q"}},
            "prometheus.url: holds credentials and basic_auth is set too; keep one",
        ),
        (
            {"url": "http://127.0.0.1:9090", "tls": {"insecure_skip_verify": True}},
            "prometheus: tls only applies to an https:// url",
        ),
        (
            {"url": "https://127.0.0.1:9090", "tls": {"ca_file": "/nonexistent/ca.crt"}},
            "prometheus.tls.ca_file: cannot read '/nonexistent/ca.crt': No such file or directory",
        ),
        (
            {"url": "https://127.0.0.1:9090", "tls": {"verify": False}},
            "prometheus.tls.verify: unknown setting",
        ),
    ],
)
def test_source_config_problems_are_one_line_naming_the_field(
    write_config: WriteConfig, prometheus: dict[str, Any], expected: str
) -> None:
    found = problems(write_config, prometheus)

    assert found == [expected]


def test_both_a_secret_and_its_file_is_refused(write_config: WriteConfig, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)

    found = problems(write_config, {"bearer_token": "a", "bearer_token_file": str(token_file)})

    assert found == ["prometheus: set only one of bearer_token and bearer_token_file"]


def test_header_set_inline_and_from_a_file_is_refused(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    (tmp_path / "org").write_text("team-b")

    found = problems(
        write_config,
        {
            "headers": {"X-Scope-OrgID": "team-a"},
            "header_files": {"x-scope-orgid": str(tmp_path / "org")},
        },
    )

    assert found == ["prometheus: header 'x-scope-orgid' is set in both headers and header_files"]


def test_tls_key_problems_are_named(
    write_config: WriteConfig, certificates: CertificateFiles, tmp_path: Path
) -> None:
    encrypted_key = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "ec", "-in", certificates.client_key, "-aes128", "-passout", "pass:x",
         "-out", encrypted_key],
        check=True,
        capture_output=True,
    )  # fmt: skip
    https = "https://127.0.0.1:9090"
    cert = str(certificates.client_cert)

    lonely = problems(write_config, {"url": https, "tls": {"cert_file": cert}})
    mismatched = problems(
        write_config,
        {"url": https, "tls": {"cert_file": cert, "key_file": str(certificates.server_key)}},
    )
    locked = problems(
        write_config, {"url": https, "tls": {"cert_file": cert, "key_file": str(encrypted_key)}}
    )
    not_pem = problems(write_config, {"url": https, "tls": {"ca_file": str(encrypted_key)}})

    assert lonely == ["prometheus.tls: set cert_file and key_file together"]
    assert mismatched == ["prometheus.tls: key_file does not match cert_file"]
    assert locked == [
        f"prometheus.tls: key_file '{encrypted_key}' is encrypted; give a key without a passphrase"
    ]
    assert not_pem == [f"prometheus.tls.ca_file: no PEM certificate in '{encrypted_key}'"]


def test_url_credentials_move_to_basic_auth_and_stay_hidden(write_config: WriteConfig) -> None:
    path = write_config({"prometheus": {"url": "https://watchdog:p%40ss-w0rd@127.0.0.1:9090/x/"}})

    settings = load_settings(path)

    prometheus = settings.prometheus
    assert prometheus.url == "https://127.0.0.1:9090/x"
    assert prometheus.basic_auth is not None
    assert prometheus.basic_auth.username == "watchdog"
    assert prometheus.basic_auth.resolve_password() == "p@ss-w0rd"
    assert "w0rd" not in repr(settings)
    assert "w0rd" not in yaml.safe_dump(settings.model_dump(mode="json"))


def test_secrets_from_files_are_read_once_at_load(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    settings = load_settings(write_config({"prometheus": {"bearer_token_file": str(token_file)}}))

    token_file.unlink()

    assert settings.prometheus.request_headers() == {"Authorization": f"Bearer {TOKEN}"}
    assert TOKEN not in repr(settings)
    assert str(token_file) in repr(settings)
