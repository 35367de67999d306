"""Parsing of /api/v1/query answers, fed with bodies recorded from Prometheus 2.42."""

import math

import pytest

from watchdog.config import Settings
from watchdog.exceptions import InvalidResponse, QueryFailed, SourceUnavailable
from watchdog.freshness import observations
from watchdog.prometheus import QueryResult, parse_query_response
from watchdog.queries import last_success_query

VECTOR = (
    b'{"status":"success","data":{"resultType":"vector","result":['
    b'{"metric":{"pipeline":"fresh-one"},"value":[1796402155.253,"1796402153.8059769"]},'
    b'{"metric":{"pipeline":"old-one"},"value":[1796402155.253,"1796398094.787386"]},'
    b'{"metric":{},"value":[1796402155.253,"1796402155.253"]}]}}'
)
ONLY_TIME = (
    b'{"status":"success","data":{"resultType":"vector","result":['
    b'{"metric":{},"value":[1796402155.263,"1796402155.263"]}]}}'
)
BAD_DATA = (
    b'{"status":"error","errorType":"bad_data","error":"invalid parameter \\"query\\": '
    b'1:18: parse error: unexpected \\"(\\" in grouping opts"}'
)
MATRIX = (
    b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up"},'
    b'"values":[[1796402095.376,"1"]]}]}}'
)


def values_of(result: QueryResult) -> dict[str, float]:
    return {name: o.value for name, o in observations(result, "pipeline", []).items()}


def test_vector_gives_samples_and_the_servers_evaluation_time() -> None:
    result = parse_query_response(200, VECTOR)

    assert result.evaluated_at == 1796402155.253
    assert values_of(result) == {
        "fresh-one": 1796402153.8059769,
        "old-one": 1796398094.787386,
    }


def test_the_time_sample_alone_still_dates_the_evaluation() -> None:
    result = parse_query_response(200, ONLY_TIME)

    assert result.evaluated_at == 1796402155.263
    assert values_of(result) == {}


def test_special_float_strings_are_parsed() -> None:
    body = (
        b'{"status":"success","data":{"resultType":"vector","result":['
        b'{"metric":{"pipeline":"a"},"value":[10,"NaN"]},'
        b'{"metric":{"pipeline":"b"},"value":[10,"+Inf"]}]}}'
    )

    values = values_of(parse_query_response(200, body))

    assert math.isnan(values["a"])
    assert values["b"] == math.inf


def test_warnings_are_kept() -> None:
    body = (
        b'{"status":"success","warnings":["partial response"],'
        b'"data":{"resultType":"vector","result":[]}}'
    )

    result = parse_query_response(200, body)

    assert result.warnings == ["partial response"]
    assert result.evaluated_at is None


def test_api_error_becomes_query_failed_with_its_type() -> None:
    with pytest.raises(QueryFailed, match=r"HTTP 400, bad_data: invalid parameter"):
        parse_query_response(400, BAD_DATA)


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, MATRIX, "expected a vector result, got 'matrix'"),
        (500, b"<html>oops</html>", "HTTP 500 with a body that is not JSON"),
        (200, b"[1, 2]", "JSON that is not an object"),
        (
            200,
            b'{"status":"success","data":{"resultType":"vector","result":[{"value":[1]}]}}',
            "malformed sample",
        ),
    ],
)
def test_other_answers_are_invalid_responses(status: int, body: bytes, message: str) -> None:
    with pytest.raises(InvalidResponse, match=message):
        parse_query_response(status, body)


def test_query_aggregates_by_the_configured_label() -> None:
    query = last_success_query(Settings(pipeline_label="job_name"))

    assert query == "max by (job_name) (ml_pipeline_last_success_timestamp) or vector(time())"


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_without_json_mean_the_source_is_not_there(status: int) -> None:
    with pytest.raises(SourceUnavailable, match=f"HTTP {status}"):
        parse_query_response(status, b"<html>Bad Gateway</html>")


@pytest.mark.parametrize("time", ['"NaN"', "-1", '"+Inf"'])
def test_evaluation_time_that_is_not_a_time_is_invalid(time: str) -> None:
    body = (
        '{"status":"success","data":{"resultType":"vector","result":['
        f'{{"metric":{{"pipeline":"a"}},"value":[{time},"1"]}}]}}}}'
    ).encode()

    with pytest.raises(InvalidResponse, match="is not a time"):
        parse_query_response(200, body)
