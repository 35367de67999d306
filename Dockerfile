# pipeline-watchdog: a slim image that runs the daemon as a non-root user.
#   docker build -t pipeline-watchdog .
#   docker run -v $PWD/watchdog.yaml:/etc/pipeline-watchdog/watchdog.yaml:ro -p 9309:9309 \
#     pipeline-watchdog
# The config must set `listen: 0.0.0.0:9309` for the port to be reachable from outside.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY watchdog ./watchdog
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin watchdog
USER 10001:10001
EXPOSE 9309
STOPSIGNAL SIGTERM
ENTRYPOINT ["pipeline-watchdog"]
CMD ["run", "--config", "/etc/pipeline-watchdog/watchdog.yaml"]
