# pipeline-watchdog: the daemon in a slim image, as the non-root UID 10001.
#   docker build -t pipeline-watchdog .
#   docker run --read-only --tmpfs /tmp -p 9309:9309 \
#     -v "$PWD/watchdog.yaml:/etc/pipeline-watchdog/watchdog.yaml:ro" pipeline-watchdog
# The config must set `listen: 0.0.0.0:9309` for the port to be reachable from
# outside the container. tests/test_deployment.py checks the properties below.

# Build stage: the project and its dependencies installed into a virtualenv by pip,
# from the same pyproject.toml that scripts/install installs for the tests in CI.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY watchdog ./watchdog
RUN python -m venv /opt/pipeline-watchdog \
    && /opt/pipeline-watchdog/bin/pip install --no-cache-dir .

# Final stage: the same base plus the virtualenv alone, its bytecode compiled at
# install: no build, no sources, and nothing for Python to write at run time.
FROM python:3.11-slim
ENV PATH=/opt/pipeline-watchdog/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric UID, so that Kubernetes' runAsNonRoot can check it; the state
# directory is created owned by it before VOLUME, which keeps that ownership.
RUN groupadd --system --gid 10001 watchdog \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin watchdog \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/pipeline-watchdog \
    && install -d -m 0755 /etc/pipeline-watchdog
COPY --from=build /opt/pipeline-watchdog /opt/pipeline-watchdog
USER 10001:10001
WORKDIR /var/lib/pipeline-watchdog
VOLUME /var/lib/pipeline-watchdog
EXPOSE 9309
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/pipeline-watchdog/bin/pipeline-watchdog"]
CMD ["run", "--config", "/etc/pipeline-watchdog/watchdog.yaml"]
