"""Process helpers: start real servers on 127.0.0.1 and wait until they work.

Each server runs as a subprocess with its output in ``<work dir>/<name>.log``.
Starting waits for the server's readiness endpoint; a server that exits or does
not get ready in time raises :class:`ServerStartError` with the last lines of
its log, which is usually all one needs to see why.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlsplit

import requests
import yaml

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_TAIL_LINES = 30
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = 5.0


class ServerStartError(RuntimeError):
    """A server exited or did not get ready; the message ends with its log."""


class MissingBinaryError(RuntimeError):
    """A server's binary is not installed; the message names the Debian package."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` now.

    SO_REUSEADDR as servers set it, so that a port left in TIME_WAIT by a
    stopped server counts as free.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` until it returns true; raise TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(min(interval, remaining))


def parse_listen_address(value: str) -> tuple[str, int]:
    """Split ``127.0.0.1:PORT``; any other host is refused.

    The testbed must never listen where other machines can reach it.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"address {value!r} is not HOST:PORT")
    if host != "127.0.0.1":
        raise ValueError(f"address {value!r}: the host must be 127.0.0.1")
    return host, int(port_text)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of a log file, or a note when it is missing."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def local_session() -> requests.Session:
    """A requests session that ignores proxy variables, so requests stay on this machine."""
    session = requests.Session()
    session.trust_env = False
    return session


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a subprocess: ours without proxy settings, plus ``extra``.

    A proxy variable inherited from the shell would send a child's requests for
    127.0.0.1 to another host.
    """
    env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    env.update(extra or {})
    return env


def require_binary(binary: str, package: str) -> str:
    """Return the path of ``binary`` or raise MissingBinaryError naming its Debian package."""
    path = shutil.which(binary)
    if path is None:
        raise MissingBinaryError(
            f"{binary!r} is not on PATH: install the Debian package {package!r} "
            f"(apt-get install {package}, or scripts/install --test)"
        )
    return path


def _check_loopback_target(address: str) -> str:
    """Refuse scrape targets that are not on this machine's loopback interface."""
    parse_listen_address(address)
    return address


class ManagedProcess:
    """A subprocess whose output goes to ``<work_dir>/<name>.log``.

    Subclasses build the command line in :meth:`command` and say when the
    process is ready in :meth:`is_ready`.
    """

    def __init__(self, work_dir: Path, name: str) -> None:
        self.work_dir = Path(work_dir)
        self.name = name
        self.log_path = self.work_dir / f"{name}.log"
        self.start_timeout = START_TIMEOUT
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def is_ready(self) -> bool:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return child_env()

    def working_directory(self) -> Path | None:
        return None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited, else None."""
        return self._process.poll() if self._process else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Spawn the process and wait until :meth:`is_ready`; return self."""
        if self.running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")

        self.work_dir.mkdir(parents=True, exist_ok=True)
        command = self.command()
        started = time.monotonic()
        self._spawn(command)

        try:
            self._wait_ready()
        except BaseException:
            # Also on Ctrl-C: a half-started server must not outlive us.
            self.stop()
            raise
        logger.info(
            "%s started (pid %s) in %.2fs", self.name, self.pid, time.monotonic() - started
        )
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Send SIGTERM, wait up to ``timeout`` s, then SIGKILL; return the exit code."""
        process = self._process
        if process is None or process.poll() is not None:
            return self.returncode

        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s ignored SIGTERM for %.0fs; killing it", self.name, timeout)
            process.kill()
            process.wait()

        logger.info("%s stopped with exit code %s", self.name, process.returncode)
        return process.returncode

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, command: Sequence[str]) -> None:
        # Append, so that a restarted server's log keeps the earlier run.
        with self.log_path.open("ab") as log:
            log.write(f"--- {' '.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.working_directory(),
                env=self.environment(),
            )

    def _wait_ready(self) -> None:
        try:
            wait_until(
                lambda: not self.running() or self.is_ready(),
                self.start_timeout,
                what=f"{self.name} to get ready",
            )
        except TimeoutError as exc:
            raise ServerStartError(
                f"{exc}; last lines of {self.log_path}:\n{self.log_tail()}"
            ) from exc

        if not self.running():
            raise ServerStartError(
                f"{self.name} exited with code {self.returncode} while starting; "
                f"last lines of {self.log_path}:\n{self.log_tail()}"
            )


class HTTPServerProcess(ManagedProcess):
    """A managed process that serves HTTP on 127.0.0.1 at a port fixed for its lifetime."""

    ready_path = "/-/ready"

    def __init__(self, work_dir: Path, name: str, port: int | None = None) -> None:
        super().__init__(work_dir, name)
        self.port = port or free_port()
        self.http = local_session()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def target(self) -> str:
        """The address to scrape, as written in a Prometheus configuration."""
        return f"127.0.0.1:{self.port}"

    def is_ready(self) -> bool:
        try:
            return self.http.get(self.url + self.ready_path, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def start(self) -> Self:
        # Another server on our port would answer the readiness check for us.
        if not port_is_free(self.port):
            raise ServerStartError(f"{self.name}: 127.0.0.1:{self.port} is already in use")
        return super().start()

    def restart(self) -> Self:
        """Stop and start again on the same port, with the same files."""
        self.stop()
        return self.start()


class PromQLServer(HTTPServerProcess):
    """A server that answers Prometheus's instant-query API."""

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Run an instant query (at unix time ``at``, default now) and return ``data.result``.

        An answer with ``status`` other than ``success`` raises RuntimeError.
        """
        params: dict[str, str | float] = {"query": expr}
        if at is not None:
            params["time"] = at
        response = self.http.get(f"{self.url}/api/v1/query", params=params, timeout=HTTP_TIMEOUT)

        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(
                f"{self.name} query {expr!r} failed with HTTP {response.status_code}: "
                f"{body.get('errorType')}: {body.get('error')}"
            )
        return list(body["data"]["result"])

    def wait_for_query(self, expr: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until an instant query returns something; return that result."""
        result: list[dict[str, Any]] = []

        def answered() -> bool:
            result[:] = self.query(expr)
            return bool(result)

        wait_until(answered, timeout, interval=0.05, what=f"a result for {expr!r}")
        return result


@dataclass(frozen=True)
class ScrapeTarget:
    """One address for Prometheus to scrape; targets of one job share its settings."""

    address: str
    job: str = "testbed"
    honor_labels: bool = False


class PrometheusServer(PromQLServer):
    """Prometheus scraping the given targets, with its data in ``<work_dir>/<name>-data``."""

    def __init__(
        self,
        work_dir: Path,
        targets: Sequence[str | ScrapeTarget] = (),
        scrape_interval: str = "1s",
        extra_args: Sequence[str] = (),
        *,
        extra_config: Mapping[str, Any] | None = None,
        port: int | None = None,
        name: str = "prometheus",
    ) -> None:
        super().__init__(work_dir, name, port)
        self.targets = [
            target if isinstance(target, ScrapeTarget) else ScrapeTarget(target)
            for target in targets
        ]
        for target in self.targets:
            _check_loopback_target(target.address)
        self.scrape_interval = scrape_interval
        self.extra_args = list(extra_args)
        self.extra_config = dict(extra_config or {})
        self.config_path = self.work_dir / f"{name}.yml"
        self.data_dir = self.work_dir / f"{name}-data"
        self.started_at = 0.0

    def config(self) -> dict[str, Any]:
        """The prometheus.yml contents: one scrape job per distinct job name."""
        jobs: dict[str, dict[str, Any]] = {}
        for target in self.targets:
            job = jobs.setdefault(
                target.job,
                {
                    "job_name": target.job,
                    "honor_labels": target.honor_labels,
                    "static_configs": [{"targets": []}],
                },
            )
            if job["honor_labels"] != target.honor_labels:
                raise ValueError(f"targets of job {target.job!r} disagree on honor_labels")
            job["static_configs"][0]["targets"].append(target.address)

        interval = {"scrape_interval": self.scrape_interval}
        interval["evaluation_interval"] = self.scrape_interval
        return {"global": interval, "scrape_configs": list(jobs.values()), **self.extra_config}

    def command(self) -> list[str]:
        binary = require_binary("prometheus", "prometheus")
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        return [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # Tests backfill and query old data; the default 15d would drop it.
            "--storage.tsdb.retention.time=100y",
            *self.extra_args,
        ]

    def start(self) -> Self:
        self.started_at = time.time()
        return super().start()

    def wait_for_targets_up(self, timeout: float = 30) -> None:
        """Wait until every target has been scraped successfully since the last start.

        Ready is not enough: Prometheus 2.42 waits about 5 s after start before
        its first scrape. And after a restart, ``up`` samples from the previous
        run still answer queries for 5 minutes, so only newer ones count.
        """
        wanted = {target.address for target in self.targets}
        wait_until(
            lambda: wanted <= self._targets_up(),
            timeout,
            interval=0.2,
            what=f"up == 1 for {', '.join(sorted(wanted))}",
        )

    def _targets_up(self) -> set[str]:
        expr = f"up == 1 and timestamp(up) >= {self.started_at:.3f}"
        try:
            samples = self.query(expr)
        except (requests.RequestException, RuntimeError):
            return set()
        return {sample["metric"].get("instance", "") for sample in samples}


@dataclass(frozen=True)
class CertificateFiles:
    """PEM files of a private CA, a server certificate for 127.0.0.1 and a client
    certificate, both signed by that CA; keys are unencrypted."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


# X.509 extensions per certificate, as ``openssl x509 -extfile`` reads them.
_CA_EXTENSIONS = """\
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""
_SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
authorityKeyIdentifier = keyid
"""
_CLIENT_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
"""


def make_certificates(directory: Path, days: int = 2) -> CertificateFiles:
    """Create a CA and certificates signed by it with the ``openssl`` command line tool.

    EC P-256 keys, so that it takes milliseconds; ``days`` keeps them short-lived.
    """
    openssl = require_binary("openssl", "openssl")
    directory.mkdir(parents=True, exist_ok=True)
    files = CertificateFiles(
        ca_file=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )

    ca_key = directory / "ca.key"
    _sign(openssl, directory, "testbed CA", ca_key, files.ca_file, _CA_EXTENSIONS, days)
    issuer = (files.ca_file, ca_key)
    server = ("127.0.0.1", files.server_key, files.server_cert, _SERVER_EXTENSIONS)
    client = ("pipeline-watchdog", files.client_key, files.client_cert, _CLIENT_EXTENSIONS)
    for subject, key, cert, extensions in (server, client):
        _sign(openssl, directory, subject, key, cert, extensions, days, issuer)
    return files


def _sign(
    openssl: str,
    directory: Path,
    subject: str,
    key: Path,
    cert: Path,
    extensions: str,
    days: int,
    issuer: tuple[Path, Path] | None = None,
) -> None:
    """Make a new key and a certificate for it, signed by ``issuer`` or by itself."""
    request = cert.with_suffix(".csr")
    extfile = cert.with_suffix(".ext")
    extfile.write_text(extensions)
    _openssl(
        openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", key, "-subj", f"/CN={subject}", "-out", request,
    )  # fmt: skip

    signing = ["-signkey", str(key)]
    if issuer is not None:
        signing = ["-CA", str(issuer[0]), "-CAkey", str(issuer[1])]
    _openssl(
        openssl, "x509", "-req", "-in", request, *signing, "-days", str(days),
        "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
        "-extfile", extfile, "-out", cert,
    )  # fmt: skip


def _openssl(*args: str | Path) -> None:
    result = subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args[:2]))} failed: {result.stderr.strip()}")


@dataclass(frozen=True)
class BasicAuthUser:
    """A user for Prometheus's web config, which stores only the bcrypt hash."""

    username: str
    password: str
    bcrypt_hash: str


# The example of Prometheus's basic-auth guide: the bcrypt hash of the password "test".
# https://prometheus.io/docs/guides/basic-auth/
PROMETHEUS_GUIDE_USER = BasicAuthUser(
    "admin", "test", "$2b$12$hNf2lSsxfm0.i4a.1kVpSOVyBCfIB51VRjgBUyv6kdnyTlgWj81Ay"
)


class TLSPrometheusServer(PrometheusServer):
    """A PrometheusServer serving HTTPS through ``--web.config.file``, optionally behind
    basic auth and asking for a client certificate signed by the same CA.

    The testbed's own requests (readiness, :meth:`query`) trust the CA and carry the
    user's credentials and the client certificate.
    https://prometheus.io/docs/prometheus/latest/configuration/https/
    """

    def __init__(
        self,
        work_dir: Path,
        certificates: CertificateFiles,
        targets: Sequence[str | ScrapeTarget] = (),
        *,
        user: BasicAuthUser | None = None,
        require_client_cert: bool = False,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        name: str = "tls-prometheus",
    ) -> None:
        super().__init__(work_dir, targets, extra_args=extra_args, port=port, name=name)
        self.certificates = certificates
        self.user = user
        self.require_client_cert = require_client_cert
        self.web_config_path = self.work_dir / f"{name}-web.yml"

        self.http.verify = str(certificates.ca_file)
        self.http.cert = (str(certificates.client_cert), str(certificates.client_key))
        if user is not None:
            self.http.auth = (user.username, user.password)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def web_config(self) -> dict[str, Any]:
        tls: dict[str, Any] = {
            "cert_file": str(self.certificates.server_cert),
            "key_file": str(self.certificates.server_key),
        }
        if self.require_client_cert:
            tls["client_auth_type"] = "RequireAndVerifyClientCert"
            tls["client_ca_file"] = str(self.certificates.ca_file)

        config: dict[str, Any] = {"tls_server_config": tls}
        if self.user is not None:
            config["basic_auth_users"] = {self.user.username: self.user.bcrypt_hash}
        return config

    def command(self) -> list[str]:
        self.web_config_path.write_text(yaml.safe_dump(self.web_config(), sort_keys=False))
        return [*super().command(), f"--web.config.file={self.web_config_path}"]


class PushgatewayServer(HTTPServerProcess):
    """A Pushgateway persisting to ``<work_dir>/<name>.data``.

    Scrape it with ``ScrapeTarget(server.target, job="pushgateway", honor_labels=True)``
    so that the pushed ``job`` and ``instance`` labels are kept.
    """

    def __init__(
        self,
        work_dir: Path,
        extra_args: Sequence[str] = (),
        *,
        port: int | None = None,
        name: str = "pushgateway",
    ) -> None:
        super().__init__(work_dir, name, port)
        self.extra_args = list(extra_args)
        self.persistence_path = self.work_dir / f"{name}.data"

    def command(self) -> list[str]:
        return [
            require_binary("prometheus-pushgateway", "prometheus-pushgateway"),
            f"--web.listen-address=127.0.0.1:{self.port}",
            # The Debian default lives under /var/lib, shared by every instance.
            f"--persistence.file={self.persistence_path}",
            *self.extra_args,
        ]

    def push(
        self,
        job: str,
        exposition: str,
        grouping: Mapping[str, str] | None = None,
        replace: bool = True,
    ) -> None:
        """Push text-format metrics to a group; PUT replaces the group, POST merges.

        The text must carry ``# TYPE`` lines, else pushed series are untyped.
        """
        method = "PUT" if replace else "POST"
        body = exposition if exposition.endswith("\n") else exposition + "\n"
        response = self.http.request(
            method, self._group_url(job, grouping), data=body.encode(), timeout=HTTP_TIMEOUT
        )
        response.raise_for_status()

    def delete(self, job: str, grouping: Mapping[str, str] | None = None) -> None:
        """Delete a whole group."""
        response = self.http.delete(self._group_url(job, grouping), timeout=HTTP_TIMEOUT)
        response.raise_for_status()

    def _group_url(self, job: str, grouping: Mapping[str, str] | None) -> str:
        # Base64 in every path segment, so values may hold "/" or be empty.
        # https://github.com/prometheus/pushgateway#url
        parts = [("job", job), *(grouping or {}).items()]
        path = "".join(f"/{quote(name)}@base64/{_base64_segment(value)}" for name, value in parts)
        return f"{self.url}/metrics{path}"


def _base64_segment(value: str) -> str:
    # The Pushgateway reads a lone "=" as the empty string.
    return base64.urlsafe_b64encode(value.encode()).decode() or "="


class VictoriaMetricsServer(PromQLServer):
    """A single-node VictoriaMetrics set up to answer queries like Prometheus."""

    ready_path = "/health"

    def __init__(
        self,
        work_dir: Path,
        extra_args: Sequence[str] = (),
        *,
        port: int | None = None,
        name: str = "victoria-metrics",
    ) -> None:
        super().__init__(work_dir, name, port)
        self.extra_args = list(extra_args)
        self.data_dir = self.work_dir / f"{name}-data"

    def command(self) -> list[str]:
        return [
            require_binary("victoria-metrics", "victoria-metrics"),
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.data_dir}",
            # By default the newest 30 s are hidden and the lookback differs from
            # Prometheus's 5 minutes.
            "-search.latencyOffset=0s",
            "-search.maxStalenessInterval=5m",
            *self.extra_args,
        ]

    def import_prometheus(self, exposition: str, timestamp: float | None = None) -> None:
        """Import text-format samples (at ``timestamp``, default now) and flush them.

        After the flush a new value of a known series answers queries at once,
        but a series new to VictoriaMetrics 1.79 only about 1 s later: wait with
        :meth:`wait_for_query`.
        """
        params = {"timestamp": int(timestamp * 1000)} if timestamp is not None else {}
        response = self.http.post(
            f"{self.url}/api/v1/import/prometheus",
            params=params,
            data=exposition.encode(),
            timeout=HTTP_TIMEOUT,
        )
        response.raise_for_status()

        self.force_flush()

    def force_flush(self) -> None:
        response = self.http.get(f"{self.url}/internal/force_flush", timeout=HTTP_TIMEOUT)
        response.raise_for_status()


class ExporterProcess(HTTPServerProcess):
    """``python -m testbed.exporter`` as a subprocess, driven through its control API."""

    ready_path = "/metrics"

    def __init__(
        self,
        work_dir: Path,
        pipelines: Sequence[str] = (),
        *,
        port: int | None = None,
        name: str = "exporter",
    ) -> None:
        """``pipelines`` are scripted-pipeline specs such as ``"training:every=2"``."""
        super().__init__(work_dir, name, port)
        self.pipeline_specs = list(pipelines)

    def command(self) -> list[str]:
        specs = [arg for spec in self.pipeline_specs for arg in ("--pipeline", spec)]
        listen = f"127.0.0.1:{self.port}"
        return [sys.executable, "-m", "testbed.exporter", "--listen", listen, *specs]

    def working_directory(self) -> Path:
        # The repository root, so that ``-m testbed.exporter`` finds the package.
        return REPO_ROOT

    def succeed(self, pipeline: str, timestamp: float | None = None) -> float:
        """Record a success (at ``timestamp``, default now); return the recorded timestamp."""
        body = {} if timestamp is None else {"timestamp": timestamp}
        response = self._control("POST", pipeline, "/success", body)
        return float(response["last_success"])

    def fail(self, pipeline: str) -> None:
        """Count a failed run; the last-success gauge keeps its value."""
        self._control("POST", pipeline, "/failure")

    def remove(self, pipeline: str) -> None:
        """Remove every series of the pipeline, so that Prometheus marks them stale."""
        self._control("DELETE", pipeline)

    def pipelines(self) -> dict[str, float | None]:
        """Last success per known pipeline; None for one that only ever failed."""
        response = self.http.get(f"{self.url}/pipelines", timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        return dict(response.json())

    def metrics_text(self) -> str:
        response = self.http.get(f"{self.url}/metrics", timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        return response.text

    def _control(
        self, method: str, pipeline: str, action: str = "", body: dict[str, float] | None = None
    ) -> dict[str, Any]:
        url = f"{self.url}/pipelines/{quote_pipeline(pipeline)}{action}"
        response = self.http.request(method, url, json=body, timeout=HTTP_TIMEOUT)
        if response.status_code >= 400:
            raise RuntimeError(
                f"exporter answered {method} {action or '/'} for pipeline {pipeline!r} with "
                f"HTTP {response.status_code}: {response.text.strip()}"
            )
        return dict(response.json())


def quote_pipeline(name: str) -> str:
    """Quote a pipeline name as one URL path segment.

    Dots are quoted too: HTTP clients remove ``.`` and ``..`` segments from paths.
    """
    return quote(name, safe="").replace(".", "%2E")


class WatchdogProcess(HTTPServerProcess):
    """``pipeline-watchdog run`` as a subprocess, with its configuration written for it.

    The configuration's ``listen`` address is set to a free loopback port when
    missing; the daemon is ready once its ``/metrics`` answers.
    """

    ready_path = "/metrics"

    def __init__(
        self,
        work_dir: Path,
        config: Mapping[str, Any],
        extra_args: Sequence[str] = (),
        *,
        binary: str | None = None,
        name: str = "watchdog",
    ) -> None:
        self.config = dict(config)
        self.config.setdefault("listen", f"127.0.0.1:{free_port()}")
        # Never the system-wide default under /var/lib: each run keeps its own state.
        self.config.setdefault("state", {"path": str(work_dir / f"{name}-state.db")})
        _, port = parse_listen_address(str(self.config["listen"]))
        super().__init__(work_dir, name, port)
        self.binary = binary
        self.extra_args = list(extra_args)
        self.config_path = self.work_dir / f"{name}.yaml"

    def command(self) -> list[str]:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        binary = self.binary or watchdog_binary()
        return [binary, "run", "--config", str(self.config_path), *self.extra_args]

    def environment(self) -> dict[str, str]:
        # Settings from the caller's environment would override the file.
        env = child_env()
        return {key: value for key, value in env.items() if not key.startswith("WATCHDOG_")}

    def metrics_text(self) -> str:
        response = self.http.get(f"{self.url}/metrics", timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        return response.text


def watchdog_binary() -> str:
    """The ``pipeline-watchdog`` script next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "pipeline-watchdog"
    if beside.exists():
        return str(beside)
    found = shutil.which("pipeline-watchdog")
    if found is None:
        raise MissingBinaryError(
            "pipeline-watchdog is not installed: run scripts/install (pip install -e .)"
        )
    return found


def check_loopback_url(url: str) -> str:
    """Refuse a URL for a server to call that is not on 127.0.0.1."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname != "127.0.0.1":
        raise ValueError(f"URL {url!r}: must be http(s)://127.0.0.1:PORT/...")
    return url


class AlertmanagerServer(HTTPServerProcess):
    """An Alertmanager routing every alert to one webhook URL on 127.0.0.1.

    ``group_wait`` and ``group_interval`` are short (1s) so that notifications
    arrive within seconds; ``repeat_interval`` is long, so that a repeat within a
    test is a duplicate.  Clustering is off (``--cluster.listen-address=``): it would
    listen on 0.0.0.0:9094.  With ``user`` it asks for basic auth through
    ``--web.config.file``, and the testbed's own requests send the credentials.
    https://prometheus.io/docs/alerting/latest/configuration/
    """

    def __init__(
        self,
        work_dir: Path,
        webhook_url: str,
        *,
        group_by: Sequence[str] = ("alertname", "pipeline"),
        group_wait: str = "1s",
        group_interval: str = "1s",
        repeat_interval: str = "1h",
        user: BasicAuthUser | None = None,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        name: str = "alertmanager",
    ) -> None:
        super().__init__(work_dir, name, port)
        self.webhook_url = check_loopback_url(webhook_url)
        self.route = {
            "receiver": "sink",
            "group_by": list(group_by),
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        }
        self.user = user
        self.extra_args = list(extra_args)
        self.config_path = self.work_dir / f"{name}.yml"
        self.web_config_path = self.work_dir / f"{name}-web.yml"
        self.data_dir = self.work_dir / f"{name}-data"
        if user is not None:
            self.http.auth = (user.username, user.password)

    def config(self) -> dict[str, Any]:
        webhook = {"url": self.webhook_url, "send_resolved": True}
        receivers = [{"name": "sink", "webhook_configs": [webhook]}]
        return {"route": self.route, "receivers": receivers}

    def command(self) -> list[str]:
        binary = require_binary("prometheus-alertmanager", "prometheus-alertmanager")
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        command = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            # Only shown in notifications (externalURL); the default names this host.
            f"--web.external-url={self.url}",
        ]
        if self.user is not None:
            users = {"basic_auth_users": {self.user.username: self.user.bcrypt_hash}}
            self.web_config_path.write_text(yaml.safe_dump(users))
            command.append(f"--web.config.file={self.web_config_path}")
        return [*command, *self.extra_args]

    @property
    def alerts_url(self) -> str:
        return f"{self.url}/api/v2/alerts"

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """The active alerts (``GET /api/v2/alerts``) having these label values."""
        # Matchers in Alertmanager's syntax; a JSON string is a valid quoted value.
        matchers = [f"{name}={json.dumps(value)}" for name, value in labels.items()]
        response = self.http.get(
            self.alerts_url, params={"filter": matchers}, timeout=HTTP_TIMEOUT
        )
        response.raise_for_status()
        return list(response.json())
