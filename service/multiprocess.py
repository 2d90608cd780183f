"""Where several worker processes pool their Prometheus metrics (prometheus_client's
multiprocess mode). The supervisor sets it before prometheus_client is imported, which is
why this name lives apart from ``service/metrics.py``."""

METRICS_FOLDER_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
