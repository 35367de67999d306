"""The container image and the Kubernetes manifests, checked without a container
engine or a cluster.

- The Dockerfile is read by a small parser (instructions, stages, exec-form JSON)
  and checked for the properties the image promises.
- ``config/kubernetes`` is rendered with ``kubectl kustomize``; every built-in
  object validates against the Kubernetes OpenAPI schemas that the
  ``kubernetes-validate`` package ships (offline, strict: unknown fields fail).
  The two Prometheus Operator objects have no schema there: their metadata is
  validated, the rule groups go through ``promtool check rules`` and ``promtool
  test rules``, and the ServiceMonitor is checked against the Service it selects.
- The ConfigMap's ``watchdog.yaml`` passes ``pipeline-watchdog validate``, with the
  Secret's keys written as the files the config names.
- The daemon runs on a read-only root file system with only ``/tmp`` writable, as in
  the pod.
"""

import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from testbed.receiver import RecordingReceiver
from testbed.servers import (
    REPO_ROOT,
    ExporterProcess,
    PrometheusServer,
    WatchdogProcess,
    child_env,
    require_binary,
    watchdog_binary,
)
from watchdog.config import Settings, load_settings

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
KUSTOMIZE_DIR = REPO_ROOT / "config" / "kubernetes"

UID = 10001
PORT = 9309
CONFIG_PATH = PurePosixPath("/etc/pipeline-watchdog/watchdog.yaml")
SECRETS_DIR = PurePosixPath("/etc/pipeline-watchdog/secrets")
STATE_DIR = PurePosixPath("/var/lib/pipeline-watchdog")
JOB = "pipeline-watchdog"

BUILT_IN_KINDS = {"ConfigMap", "Secret", "PersistentVolumeClaim", "Deployment", "Service"}
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
# What may not run in the final stage: package managers, compilers, installers.
BUILD_TOOLS = re.compile(
    r"\b(apt-get|apt|aptitude|dpkg|apk|gcc|g\+\+|cc|clang|make|build-essential|pip3?)\b"
)


# --- A Dockerfile parser: comments, line continuations, stages, leading options and
# the JSON (exec) form. Not handled, as the Dockerfile uses none of them: ARG
# substitution, heredocs, another escape character.
# https://docs.docker.com/reference/dockerfile/


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    arguments: str  # continuation lines joined
    line: int

    def flags(self) -> dict[str, str]:
        """Leading ``--name=value`` options, as in ``COPY --from=build``."""
        flags = {}
        for token in shlex.split(self.arguments):
            if not token.startswith("--"):
                break
            name, _, value = token[2:].partition("=")
            flags[name] = value
        return flags

    def operands(self) -> list[str]:
        """The arguments after the leading options (shell words, or the JSON array)."""
        if self.arguments.startswith("["):
            return self.exec_form()
        tokens = shlex.split(self.arguments)
        return tokens[len(self.flags()) :]

    def exec_form(self) -> list[str]:
        """The JSON array of the exec form; fails for the shell form."""
        value = json.loads(self.arguments)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"line {self.line}: not a JSON array of strings")
        return value

    def environment(self) -> dict[str, str]:
        """``ENV a=1 b=2`` (or the legacy ``ENV a 1``) as a dict."""
        tokens = shlex.split(self.arguments)
        if "=" not in tokens[0]:
            return {tokens[0]: " ".join(tokens[1:])}
        return dict(token.split("=", 1) for token in tokens)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for instruction in self.all("ENV"):
            env.update(instruction.environment())
        return env


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Instructions with their first line number: comments and blank lines dropped,
    lines ending in a backslash joined to the next (comments inside are dropped too)."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        yield start, " ".join(pending)
        pending = []
    if pending:
        raise ValueError(f"line {start}: the file ends inside a continued instruction")


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for number, line in logical_lines(text):
        keyword, _, arguments = line.partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip(), number)
        if instruction.keyword == "FROM":
            words = [w for w in arguments.split() if not w.startswith("--platform")]
            named = len(words) == 3 and words[1].lower() == "as"
            stages.append(Stage(words[0], words[2] if named else None))
        elif not stages:
            raise ValueError(f"line {number}: {instruction.keyword} before the first FROM")
        stages[-1].instructions.append(instruction)
    return stages


def docker_ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context: the last pattern
    matching it or one of its parent directories wins; ``!`` re-includes."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        include = pattern.startswith("!")
        regex = _ignore_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not include
    return ignored


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    # Go's filepath.Match: * and ? never cross a /; Docker adds ** for any depth.
    regex = ""
    for piece in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
        regex += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
            piece, re.escape(piece)
        )
    return re.compile(regex)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


# --- The image


def test_dockerfile_parser_reads_stages_continuations_and_exec_form() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "FROM python:3.11-slim AS build\n"
        "RUN a \\\n"
        "    # a comment inside the instruction\n"
        "    && b\n"
        "FROM python:3.11-slim\n"
        "ENV A=1 \\\n    B=2\n"
        'ENTRYPOINT ["/bin/x", "run"]\n'
        "COPY --from=build /opt /opt\n"
    )

    build, final = parse_dockerfile(text)

    assert (build.base, build.name) == ("python:3.11-slim", "build")
    assert build.last("RUN").arguments == "a && b"
    assert final.name is None
    assert final.environment() == {"A": "1", "B": "2"}
    assert final.last("ENTRYPOINT").exec_form() == ["/bin/x", "run"]
    assert final.last("COPY").flags() == {"from": "build"}
    assert final.last("COPY").operands() == ["/opt", "/opt"]


def test_image_is_built_in_stages_on_slim_python(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert {stage.base for stage in stages} == {"python:3.11-slim"}


def test_final_stage_copies_the_install_and_has_no_build_tools(
    stages: list[Stage], final: Stage
) -> None:
    builders = {stage.name for stage in stages[:-1]}

    copies = final.all("COPY") + final.all("ADD")
    runs = " ".join(run.arguments for run in final.all("RUN"))

    assert copies, "the final stage copies nothing from the build stage"
    assert all(copy.flags().get("from") in builders for copy in copies), (
        "the final stage copies from the build context, not from a build stage"
    )
    assert not BUILD_TOOLS.findall(runs)


def test_no_pip_cache_is_kept(stages: list[Stage]) -> None:
    for stage in stages:
        for run in stage.all("RUN"):
            if re.search(r"\bpip3? install\b", run.arguments):
                cacheless = "--no-cache-dir" in run.arguments
                assert cacheless or stage.environment().get("PIP_NO_CACHE_DIR") == "1"


def test_image_runs_as_a_fixed_non_root_uid(final: Stage) -> None:
    user = final.last("USER").arguments

    # Numeric: Kubernetes' runAsNonRoot can only check a numeric user.
    assert re.fullmatch(r"\d+(:\d+)?", user)
    assert int(user.split(":")[0]) == UID


def test_entrypoint_is_the_console_script_in_exec_form(final: Stage) -> None:
    entrypoint = final.last("ENTRYPOINT").exec_form()
    command = final.last("CMD").exec_form()

    assert len(entrypoint) == 1
    assert PurePosixPath(entrypoint[0]).name == "pipeline-watchdog"
    assert command == ["run", "--config", str(CONFIG_PATH)]


def test_image_stops_on_sigterm_and_exposes_the_metrics_port(final: Stage) -> None:
    assert final.last("STOPSIGNAL").arguments == "SIGTERM"
    assert final.last("EXPOSE").operands() in ([str(PORT)], [f"{PORT}/tcp"])


def test_state_is_a_volume_owned_by_the_uid(final: Stage) -> None:
    volume = final.last("VOLUME")
    created = [
        run
        for run in final.all("RUN")
        if re.search(rf"install -d -o {UID} -g {UID} [^&]*{STATE_DIR}\b", run.arguments)
    ]

    assert volume.operands() == [str(STATE_DIR)]
    # Changes a RUN makes inside a declared volume afterwards may be discarded.
    assert created and created[0].line < volume.line


def test_python_writes_no_bytecode_and_starts_in_the_state_directory(final: Stage) -> None:
    env = final.environment()

    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert final.last("WORKDIR").arguments == str(STATE_DIR)


def test_build_context_holds_what_the_dockerfile_copies(stages: list[Stage]) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        source
        for stage in stages
        for copy in stage.all("COPY")
        if "from" not in copy.flags()
        for source in copy.operands()[:-1]
    ]

    assert sources
    for source in sources:
        assert (REPO_ROOT / source).exists(), source
        assert not docker_ignored(source, patterns), source
    assert not docker_ignored("watchdog/cli.py", patterns)
    for kept_out in (".venv/bin/python", ".git/HEAD", "watchdog/__pycache__/cli.pyc", "tests"):
        assert docker_ignored(kept_out, patterns), kept_out


# --- The Kubernetes manifests


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = require_binary("kubectl", "kubernetes-client")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUSTOMIZE_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(rendered: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in rendered if doc["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


@pytest.fixture(scope="module")
def pod(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(rendered, "Deployment")["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.fixture
def settings(rendered: list[dict[str, Any]], tmp_path: Path) -> tuple[Path, Settings]:
    """The ConfigMap's watchdog.yaml, written with its secret paths moved under tmp_path
    and each Secret key written there as a file, as the Secret volume would be."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for key, value in one(rendered, "Secret")["stringData"].items():
        (secrets / key).write_text(value, encoding="utf-8")

    text = one(rendered, "ConfigMap")["data"]["watchdog.yaml"]
    path = tmp_path / "watchdog.yaml"
    path.write_text(text.replace(f"{SECRETS_DIR}/", f"{secrets}/"), encoding="utf-8")
    return path, load_settings(path)


def test_kustomize_renders_every_object(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(doc["kind"] for doc in rendered)

    assert kinds == sorted(BUILT_IN_KINDS | OPERATOR_KINDS)
    for doc in rendered:
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == JOB


def kubernetes_versions() -> list[str]:
    # The oldest and newest schemas the installed package ships.
    versions = kubernetes_validate.utils.all_versions()
    return sorted({versions[0], versions[-1]})


@pytest.mark.parametrize("version", kubernetes_versions())
def test_built_in_objects_validate_against_the_kubernetes_schemas(
    rendered: list[dict[str, Any]], version: str
) -> None:
    for doc in rendered:
        if doc["kind"] in BUILT_IN_KINDS:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("kind", sorted(OPERATOR_KINDS))
def test_operator_objects_have_valid_metadata_but_no_schema_here(
    rendered: list[dict[str, Any]], kind: str
) -> None:
    doc = one(rendered, kind)
    version = kubernetes_versions()[-1]

    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(doc, version, strict=True)
    # ObjectMeta is the same for every kind: check it as a ConfigMap's.
    carrier = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
    kubernetes_validate.validate(carrier, version, strict=True)
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"


def test_deployment_runs_one_watchdog_at_a_time(rendered: list[dict[str, Any]]) -> None:
    spec = one(rendered, "Deployment")["spec"]

    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_pod_is_locked_down(pod: dict[str, Any], container: dict[str, Any]) -> None:
    context = container["securityContext"]

    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}


def test_probes_use_the_health_endpoints(container: dict[str, Any]) -> None:
    probes = {
        kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }

    assert probes == {
        "startupProbe": ("/healthz", "metrics"),
        "livenessProbe": ("/healthz", "metrics"),
        "readinessProbe": ("/readyz", "metrics"),
    }


def test_resources_have_requests_within_limits(container: dict[str, Any]) -> None:
    resources = container["resources"]

    for name in ("cpu", "memory"):
        request = quantity(resources["requests"][name])
        assert 0 < request <= quantity(resources["limits"][name])


def quantity(text: str) -> float:
    """A Kubernetes quantity of the forms used here: 50m, 0.5, 128Mi, 1Gi."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi)?", text)
    assert match, f"unexpected quantity {text!r}"
    number, unit = match.groups()
    return float(number) * units.get(unit or "", 1)


def test_container_matches_the_image(final: Stage, container: dict[str, Any]) -> None:
    user = final.last("USER").arguments.split(":")[0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}

    assert container["args"] == final.last("CMD").exec_form()
    assert container["ports"] == [{"name": "metrics", "containerPort": PORT, "protocol": "TCP"}]
    assert mounts["config"] == str(CONFIG_PATH.parent)
    assert mounts["state"] == final.last("VOLUME").operands()[0]
    assert mounts["tmp"] == "/tmp"
    assert int(user) == UID


def test_volumes_hold_the_config_secrets_state_and_tmp(
    rendered: list[dict[str, Any]], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}

    assert volumes["config"]["configMap"]["name"] == one(rendered, "ConfigMap")["metadata"]["name"]
    assert (
        volumes["secrets"]["secret"]["secretName"] == one(rendered, "Secret")["metadata"]["name"]
    )
    assert (
        volumes["state"]["persistentVolumeClaim"]["claimName"]
        == one(rendered, "PersistentVolumeClaim")["metadata"]["name"]
    )
    assert "emptyDir" in volumes["tmp"]
    assert mounts["secrets"]["mountPath"] == str(SECRETS_DIR)
    # A subPath mount never sees an updated ConfigMap, so a reload would never happen.
    assert all("subPath" not in mount for mount in mounts.values())


def test_configmap_passes_validate(settings: tuple[Path, Settings]) -> None:
    path, _ = settings
    env = {k: v for k, v in child_env().items() if not k.startswith("WATCHDOG_")}

    result = subprocess.run(
        [watchdog_binary(), "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_config_listens_for_the_cluster_and_keeps_state_on_the_volume(
    settings: tuple[Path, Settings], container: dict[str, Any]
) -> None:
    _, config = settings
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}

    assert config.listen == f"0.0.0.0:{PORT}"
    assert str(config.state.path.parent) == mounts["state"]


def test_every_secret_file_is_a_key_of_the_mounted_secret(
    rendered: list[dict[str, Any]],
) -> None:
    text = one(rendered, "ConfigMap")["data"]["watchdog.yaml"]
    referenced = set(_file_settings(yaml.safe_load(text)))
    keys = set(one(rendered, "Secret")["stringData"])

    assert referenced
    assert {PurePosixPath(path).parent for path in referenced} == {SECRETS_DIR}
    # Both ways: no setting names a missing key, and no secret is left unused.
    assert {PurePosixPath(path).name for path in referenced} == keys


def _file_settings(node: object) -> Iterator[str]:
    """Every path given by a ``*_file`` setting or in ``header_files``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("_file") and isinstance(value, str):
                yield value
            elif key == "header_files" and isinstance(value, dict):
                yield from value.values()
            else:
                yield from _file_settings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _file_settings(item)


def test_termination_grace_covers_a_cycle_and_the_outbox_drain(
    settings: tuple[Path, Settings], pod: dict[str, Any]
) -> None:
    _, config = settings
    queries = 1 + len(config.checks) + int(config.pushgateway_signals)
    # SIGTERM waits for the running cycle, then gives the outbox shutdown_timeout.
    needed = config.prometheus.timeout * queries + config.delivery.shutdown_timeout

    assert pod["terminationGracePeriodSeconds"] > needed


def test_servicemonitor_scrapes_the_service(rendered: list[dict[str, Any]]) -> None:
    monitor = one(rendered, "ServiceMonitor")["spec"]
    service = one(rendered, "Service")
    labels = service["metadata"]["labels"]

    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    assert labels[monitor["jobLabel"]] == JOB
    assert [e["port"] for e in monitor["endpoints"]] == [
        p["name"] for p in service["spec"]["ports"]
    ]
    assert (
        service["spec"]["selector"].items()
        <= one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )
    # No CRD schema here: at least keep to fields the operator's API reference lists.
    assert set(monitor) <= {"jobLabel", "selector", "endpoints", "namespaceSelector"}
    for endpoint in monitor["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}


@pytest.fixture(scope="module")
def rule_file(rendered: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = one(rendered, "PrometheusRule")["spec"]
    assert set(spec) == {"groups"}
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": spec["groups"]}), encoding="utf-8")
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool", "prometheus")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def test_prometheus_rules_pass_promtool_check(rule_file: Path) -> None:
    result = promtool("check", "rules", str(rule_file))

    assert result.returncode == 0, result.stdout + result.stderr


def alert_rules(rule_file: Path) -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(rule_file.read_text(encoding="utf-8"))["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


# Each case: the series a broken watchdog would export (1-minute samples, promtool's
# expanding notation), when to look, and the one alert that must be firing then.
POD = f'job="{JOB}", namespace="monitoring", pod="pipeline-watchdog-0"'
ALERT_CASES: dict[str, tuple[list[tuple[str, str]], str, str]] = {
    "PipelineWatchdogDown": ([(f"up{{{POD}}}", "1 1 0x20")], "10m", POD),
    "PipelineWatchdogAbsent": (
        [('up{job="other"}', "1x20")],
        "15m",
        f'job="{JOB}"',
    ),
    "PipelineWatchdogEvaluationsFailing": (
        [
            (f'ml_watchdog_evaluations_total{{{POD}, result="success"}}', "0+2x5 10x30"),
            (f'ml_watchdog_evaluations_total{{{POD}, result="error"}}', "0x5 0+2x30"),
        ],
        "30m",
        'namespace="monitoring", pod="pipeline-watchdog-0"',
    ),
    "PipelineWatchdogEvaluationStale": (
        [(f"ml_watchdog_last_evaluation_timestamp_seconds{{{POD}}}", "0+60x5 300x30")],
        "30m",
        POD,
    ),
    "PipelineWatchdogNotificationsFailing": (
        [
            (
                f'ml_watchdog_notifications_total{{{POD}, receiver="ml-slack", result="failed"}}',
                "0x5 1x20",
            )
        ],
        "10m",
        f'{POD}, receiver="ml-slack", result="failed"',
    ),
    "PipelineWatchdogOutboxGrowing": (
        [(f'ml_watchdog_outbox_pending{{{POD}, receiver="ml-slack"}}', "0x5 1+1x40")],
        "35m",
        f'{POD}, receiver="ml-slack"',
    ),
    "PipelineWatchdogConfigReloadFailed": (
        [(f"ml_watchdog_config_last_reload_successful{{{POD}}}", "1x5 0x30")],
        "20m",
        POD,
    ),
}
HEALTHY = [
    (f"up{{{POD}}}", "1x60"),
    (f'ml_watchdog_evaluations_total{{{POD}, result="success"}}', "0+2x60"),
    (f'ml_watchdog_evaluations_total{{{POD}, result="error"}}', "0x60"),
    (f"ml_watchdog_last_evaluation_timestamp_seconds{{{POD}}}", "0+60x60"),
    (f'ml_watchdog_notifications_total{{{POD}, receiver="ml-slack", result="failed"}}', "0x60"),
    (f'ml_watchdog_outbox_pending{{{POD}, receiver="ml-slack"}}', "0 1 0 2 0x56"),
    (f"ml_watchdog_config_last_reload_successful{{{POD}}}", "1x60"),
]


def _alert_test(series: list[tuple[str, str]], at: str, firing: list[str]) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": [{"series": name, "values": values} for name, values in series],
        "promql_expr_test": [
            {
                "expr": 'ALERTS{alertstate="firing"}',
                "eval_time": at,
                "exp_samples": [{"labels": labels, "value": 1} for labels in firing],
            }
        ],
    }


def test_each_alert_fires_on_its_failure_and_none_when_healthy(
    rule_file: Path, tmp_path: Path
) -> None:
    rules = alert_rules(rule_file)
    tests = [_alert_test(HEALTHY, "60m", [])]
    for alert, (series, at, labels) in ALERT_CASES.items():
        # A scraped watchdog, unless the case is about its scrape target.
        if not any(name.startswith("up{") for name, _ in series):
            series = [(f"up{{{POD}}}", "1x60"), *series]
        severity = rules[alert]["labels"]["severity"]
        firing = (
            f'ALERTS{{alertname="{alert}", alertstate="firing", {labels}, severity="{severity}"}}'
        )
        tests.append(_alert_test(series, at, [firing]))
    path = tmp_path / "rules_test.yaml"
    unit_tests = {"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": tests}
    path.write_text(yaml.safe_dump(unit_tests), encoding="utf-8")

    result = promtool("test", "rules", str(path))

    assert set(ALERT_CASES) == set(rules)
    assert result.returncode == 0, result.stdout + result.stderr


# --- The daemon on a read-only root file system


class ReadOnlyRootWatchdog(WatchdogProcess):
    """``pipeline-watchdog run`` in a mount namespace of its own where ``/`` is read-only
    and only ``/tmp`` stays writable, as in the pod (readOnlyRootFilesystem, an emptyDir
    on /tmp); the state directory, a volume in the pod, lies under /tmp here."""

    def command(self) -> list[str]:
        unshare = require_binary("unshare", "util-linux")
        # Private propagation: the remount changes this process's view only.
        script = 'mount --bind /tmp /tmp && mount -o remount,bind,ro / && exec "$@"'
        as_root = [] if os.geteuid() == 0 else ["--map-root-user"]
        namespace = [unshare, "--mount", "--propagation", "private", *as_root]
        return [*namespace, "sh", "-c", script, "sh", *super().command()]

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "PYTHONDONTWRITEBYTECODE": "1"}


def sample_value(metrics: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", metrics, re.MULTILINE)
    assert match, f"no sample {name}"
    return float(match.group(1))


def test_daemon_writes_only_to_its_state_directory_and_tmp(
    tmp_path: Path,
    exporter: ExporterProcess,
    prometheus: PrometheusServer,
    receiver: RecordingReceiver,
    pipelines: Callable[[str], str],
) -> None:
    pipeline = pipelines("deployment-read-only-root")
    exporter.succeed(pipeline, timestamp=time.time() - 3 * 3600)
    prometheus.wait_for_query(f'ml_pipeline_last_success_timestamp{{pipeline="{pipeline}"}}')
    state = tmp_path / "state" / "state.db"
    config = {
        "prometheus": {"url": prometheus.url},
        "evaluation_interval": "1s",
        "discovery": {"include": [pipeline]},
        "defaults": {"max_age": "1h"},
        "receivers": [{"name": "hook", "type": "webhook", "url": receiver.url()}],
        "state": {"path": str(state)},
    }

    with ReadOnlyRootWatchdog(tmp_path, config) as watchdog:
        receiver.wait_for(bool, timeout=20, what="the stale pipeline's notification")
        metrics = watchdog.metrics_text()
        watchdog.stop()

    log = watchdog.log_tail(200)
    assert watchdog.returncode == 0, log
    assert "Read-only file system" not in log
    assert sample_value(metrics, "ml_watchdog_state_write_duration_seconds_count") > 0
    assert state.exists()
