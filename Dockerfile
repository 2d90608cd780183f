# omgate container: multi-stage, non-root, JSON logs, config at /etc/omgate/omgate.toml,
# certificates under /certs, inbox on the volume /var/lib/omgate.
# BASE_IMAGE must provide python3 (>= 3.11) with venv; swap it with --build-arg.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN python3 -m venv /opt/omgate \
    && /opt/omgate/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && /opt/omgate/bin/pip uninstall --yes pip setuptools

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 omgate \
    && useradd --system --uid 10001 --gid omgate --no-create-home --home-dir /var/lib/omgate omgate \
    && mkdir -p /var/lib/omgate /etc/omgate /certs \
    && chown omgate:omgate /var/lib/omgate
COPY --from=build /opt/omgate /opt/omgate
COPY config/container.toml /etc/omgate/omgate.toml
ENV PATH=/opt/omgate/bin:$PATH \
    OMGATE_CONFIG=/etc/omgate/omgate.toml \
    OMGATE_LOGGING__FORMAT=json \
    PYTHONUNBUFFERED=1
USER omgate
VOLUME ["/var/lib/omgate"]
EXPOSE 8443 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/readyz', timeout=2)"]
ENTRYPOINT ["omgate"]
CMD ["serve"]
