from pathlib import Path

import pytest

from watchdog.config import load_settings
from watchdog.exceptions import ConfigError

EXAMPLE = Path(__file__).parent.parent / "config" / "watchdog.example.yaml"


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return caught.value.problems


def test_empty_file_gives_documented_defaults(write_config) -> None:
    settings = load_settings(write_config(""))

    assert settings.prometheus.url == "http://127.0.0.1:9090"
    assert settings.prometheus.timeout == 10
    assert settings.evaluation_interval == 30
    assert settings.defaults.max_age == 7200
    assert settings.pipeline_label == "pipeline"
    assert settings.listen == "127.0.0.1:9309"


def test_example_config_is_valid() -> None:
    settings = load_settings(EXAMPLE)

    assert settings.receivers
    assert settings.pipelines


def test_each_problem_is_one_line_naming_the_field(write_config) -> None:
    path = write_config(
        {
            "evaluation_interval": "soon",
            "pipelines": [
                {"name": "a"},
                {"name": "b", "max_age": "1h"},
                {"name": "c", "max_age": "2 hours"},
                {"name": "d", "maxage": "1h"},
            ],
            "receivers": [{"name": "r", "type": "pager", "url": "http://127.0.0.1:1/x"}],
        }
    )

    found = problems(path)

    assert found == [
        "evaluation_interval: invalid duration 'soon' "
        "(expected e.g. 500ms, 30s, 5m, 2h, 1d or seconds)",
        "pipelines[2].max_age: invalid duration '2 hours' "
        "(expected e.g. 500ms, 30s, 5m, 2h, 1d or seconds)",
        "pipelines[3].maxage: unknown setting",
        "receivers[0]: unknown type 'pager' "
        "(expected 'webhook', 'slack', 'pagerduty', 'alertmanager')",
    ]


def test_zero_threshold_is_rejected(write_config) -> None:
    found = problems(write_config({"defaults": {"max_age": 0}}))

    assert found == ["defaults.max_age: must be greater than zero"]


def test_duplicate_names_are_rejected(write_config) -> None:
    found = problems(write_config({"pipelines": [{"name": "a"}, {"name": "a"}]}))

    assert found == ["pipelines: duplicate name 'a'"]


def test_receiver_url_problems_never_echo_the_url(write_config) -> None:
    secret = "ftp://hooks.example/T000/B000/SECRETTOKEN"
    path = write_config({"receivers": [{"name": "s", "type": "slack", "url": secret}]})

    found = problems(path)

    assert found == ["receivers[0].url: must be an http:// or https:// URL"]
    assert "SECRETTOKEN" not in " ".join(found)


def test_receiver_url_can_come_from_a_file(write_config, tmp_path: Path) -> None:
    secret_file = tmp_path / "slack-url"
    secret_file.write_text("http://127.0.0.1:1/services/T/B/X\n")
    path = write_config(
        {"receivers": [{"name": "s", "type": "slack", "url_file": str(secret_file)}]}
    )

    settings = load_settings(path)

    assert settings.receivers[0].resolve_url() == "http://127.0.0.1:1/services/T/B/X"


def test_unreadable_url_file_is_reported(write_config, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    path = write_config({"receivers": [{"name": "s", "type": "slack", "url_file": str(missing)}]})

    assert problems(path) == [
        f"receivers[0].url_file: cannot read '{missing}': No such file or directory"
    ]


def test_receiver_needs_exactly_one_url_source(write_config) -> None:
    found = problems(write_config({"receivers": [{"name": "w", "type": "webhook"}]}))

    assert found == ["receivers[0]: set exactly one of url and url_file"]


def test_secret_url_is_hidden_in_repr(write_config) -> None:
    url = "http://127.0.0.1:1/services/T/B/SECRETTOKEN"
    path = write_config({"receivers": [{"name": "s", "type": "slack", "url": url}]})

    settings = load_settings(path)

    assert "SECRETTOKEN" not in repr(settings)
    assert "SECRETTOKEN" not in str(settings.model_dump())


def test_environment_wins_over_file_and_keeps_sibling_keys(
    write_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config({"prometheus": {"url": "http://127.0.0.1:9090", "timeout": "3s"}})
    monkeypatch.setenv("WATCHDOG_PROMETHEUS__URL", "http://127.0.0.1:9999/prefix")
    monkeypatch.setenv("WATCHDOG_DEFAULTS__MAX_AGE", "45m")
    monkeypatch.setenv("WATCHDOG_PIPELINES", '[{"name": "train", "max_age": "1h"}]')

    settings = load_settings(path)

    assert settings.prometheus.url == "http://127.0.0.1:9999/prefix"
    assert settings.prometheus.timeout == 3
    assert settings.defaults.max_age == 2700
    assert settings.pipelines[0].max_age == 3600


def test_bad_environment_value_names_the_field(
    write_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_EVALUATION_INTERVAL", "often")

    found = problems(write_config({}))

    assert found[0].startswith("evaluation_interval: invalid duration 'often'")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prometheus: [unclosed", "invalid YAML at line 1"),
        ("- just\n- a list\n", "the top level must be a mapping"),
    ],
)
def test_unparseable_file_is_one_line(write_config, text: str, expected: str) -> None:
    found = problems(write_config(text))

    assert len(found) == 1
    assert expected in found[0]


def test_missing_file_is_reported(tmp_path: Path) -> None:
    found = problems(tmp_path / "absent.yaml")

    assert found == [
        f"cannot read config file '{tmp_path / 'absent.yaml'}': No such file or directory"
    ]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("listen", "9309", "listen: invalid listen address '9309' (expected host:port"),
        ("pipeline_label", "pipe-line", "pipeline_label: invalid label name 'pipe-line'"),
        ("metric", "bad metric", "metric: invalid metric name 'bad metric'"),
        ("prometheus", {"url": "localhost:9090"}, "prometheus.url: must be an http"),
    ],
)
def test_invalid_scalars_are_named(write_config, key: str, value: object, expected: str) -> None:
    found = problems(write_config({key: value}))

    assert found[0].startswith(expected)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"name": "p", "schedule": "61 2 * * *"},
            "pipelines[0].schedule: invalid cron expression '61 2 * * *': Bad minute",
        ),
        (
            {"name": "p", "schedule": "0 2 * *"},
            "pipelines[0].schedule: invalid cron expression '0 2 * *': expected 5 fields",
        ),
        (
            {"name": "p", "timezone": "Europe/Atlantis"},
            "pipelines[0].timezone: unknown time zone 'Europe/Atlantis' (expected an IANA name)",
        ),
        ({"match": "etl-("}, "pipelines[0].match: invalid regular expression 'etl-('"),
        ({"max_age": "1h"}, "pipelines[0]: set exactly one of name and match"),
        ({"name": "p", "timestamp_unit": "days"}, "pipelines[0].timestamp_unit: input should be"),
        ({"name": "p", "labels": {"bad-name": "x"}}, "pipelines[0].labels: invalid label name"),
    ],
)
def test_pipeline_entry_problems_name_the_field(
    write_config, entry: dict[str, object], expected: str
) -> None:
    found = problems(write_config({"pipelines": [entry]}))

    assert len(found) == 1
    assert found[0].startswith(expected)


def test_dependency_cycle_is_rejected_with_its_path(write_config) -> None:
    pipelines = [
        {"name": "a", "depends_on": ["b"]},
        {"name": "b", "depends_on": ["c"]},
        {"name": "c", "depends_on": ["a"]},
    ]

    found = problems(write_config({"pipelines": pipelines}))

    assert found == ["pipelines: depends_on forms a cycle: a -> b -> c -> a"]


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        (
            {"name": "l", "type": "lag", "expr": "a", "threshold": "1h"},
            "checks[0]: a lag check needs baseline",
        ),
        (
            {"name": "t", "type": "age", "expr": "a", "baseline": "b", "threshold": "1h"},
            "checks[0]: baseline only applies to lag checks",
        ),
        ({"name": "t", "type": "age", "expr": "a"}, "checks[0].threshold: required"),
        (
            {"name": "t", "type": "rate", "expr": "a", "threshold": "1h"},
            "checks[0].type: input should be",
        ),
    ],
)
def test_check_problems_name_the_field(write_config, check: dict[str, object], expected: str):
    found = problems(write_config({"checks": [check]}))

    assert found[0].startswith(expected)


def test_discovery_regex_problems_name_the_index(write_config) -> None:
    found = problems(write_config({"discovery": {"exclude": ["ok", "("]}}))

    assert found[0].startswith("discovery.exclude: invalid regular expression '('")


def test_environment_list_that_is_not_json_is_one_line(
    write_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_PIPELINES", '[{"name": ')

    found = problems(write_config({}))

    assert found == ["pipelines: WATCHDOG_PIPELINES from the environment is not valid JSON"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"listen: \xff\n", "not UTF-8 text"),
        (b"1: 2\n", "setting names must be text, not 1"),
        (b"evaluation_interval: " + b"9" * 5000 + b"\n", "invalid YAML"),
        (b"evaluation_interval: " + b"9" * 400 + b"\n", "longer than 10 years"),
        (b"evaluation_interval: 1e15\n", "longer than 10 years"),
    ],
)
def test_hostile_files_are_one_line_errors(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "watchdog.yaml"
    path.write_bytes(content)

    found = problems(path)

    assert len(found) == 1
    assert expected in found[0]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"listen": "::1"}, "listen: invalid listen address '::1'"),
        ({"listen": "127.0.0.1:\u0661\u0662"}, "listen: invalid listen address"),
        ({"prometheus": {"url": "http://127.0.0.1:9090/?tenant=a"}}, "must not have a query"),
        ({"prometheus": {"url": "http://u:SEC/RET@127.0.0.1:9090"}}, "has no valid host:port"),
    ],
)
def test_odd_addresses_are_refused_without_echoing_secrets(
    write_config, values: dict[str, object], expected: str
) -> None:
    found = problems(write_config(values))

    assert expected in found[0]
    assert "SEC" not in " ".join(found)


def test_misspelt_environment_variables_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from watchdog.config import unknown_environment

    found = unknown_environment(
        {"WATCHDOG_EVALUATION_INTERVALL": "1", "WATCHDOG_PROMETHEUS__URL": "x", "HOME": "/"}
    )

    assert found == ["WATCHDOG_EVALUATION_INTERVALL"]


@pytest.mark.parametrize(
    ("api", "expected"),
    [
        ({"token": ""}, "api.token: must not be empty"),
        ({"token_file": "/nonexistent/token"}, "api.token_file: cannot read '/nonexistent/token'"),
    ],
)
def test_api_token_problems_are_found_at_load(write_config, api: dict, expected: str) -> None:
    found = problems(write_config({"api": api}))

    assert found[0].startswith(expected)


def test_api_token_from_a_file_is_read_at_load(write_config, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")

    settings = load_settings(write_config({"api": {"token_file": str(token_file)}}))

    assert settings.api.resolve_token() == "s3cret-token"
    assert "s3cret-token" not in repr(settings)


def test_silence_matching_every_alert_is_refused(write_config) -> None:
    silence = {
        "matchers": [{"name": "team", "value": ".*", "is_regex": True}],
        "ends_at": "2030-01-01T00:00:00Z",
        "comment": "oops",
    }

    found = problems(write_config({"silences": [silence]}))

    assert found == ["silences[0]: its matchers match every alert; name something to silence"]
