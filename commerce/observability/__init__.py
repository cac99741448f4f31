"""Prometheus metrics and OpenTelemetry traces of the pipeline (docs/OPERATIONS.md, Observability).

- `metrics`: every metric, and the observer functions the relay and the consumer call.
- `exporters`: how each process serves them (the API's /metrics, a port per worker or consumer).
- `telemetry`: the OpenTelemetry SDK from settings, and the messaging spans of the outbox.
- `worker`: Celery worker signal hooks (multiprocess metrics, tracing after fork).

Nothing here imports prometheus_client at package import: a Celery worker must have
PROMETHEUS_MULTIPROC_DIR in its environment before the client is first imported.
"""
