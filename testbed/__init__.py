"""Real local servers for the demo and the integration tests.

Everything here listens on 127.0.0.1 only, on a free port, and keeps its files
(configuration, data, logs) in a work directory chosen by the caller.

- ``testbed.servers``: start and stop Prometheus, Pushgateway, VictoriaMetrics
  and the example exporter as subprocesses.
- ``testbed.exporter``: an example exporter of ML-pipeline metrics with a
  control API.
- ``testbed.receiver``: an HTTP server that records the notifications it gets.
- ``testbed.demo``: the end-to-end demo run by ``scripts/demo``.
"""
