# omgate container: multi-stage, non-root, JSON logs, config at /etc/omgate/omgate.toml,
# certificates under /certs, inbox on the volume /var/lib/omgate.
#
# The dependencies are installed from requirements.txt: exact versions, hash-checked.
# BASE_IMAGE must provide python3 (3.11 or newer) with the venv module; swap it with
#   --build-arg BASE_IMAGE=...
# PIP_INSTALL_OPTIONS lets a build without a package index use wheels placed in the
# context's wheels/ folder (`make image` does this):
#   --build-arg PIP_INSTALL_OPTIONS="--no-index --find-links /src/wheels"
# VERSION (keep it equal to pyproject.toml's) and REVISION (the commit) become the OCI
# labels; the source label is added only where the repository's URL is known
#   --label org.opencontainers.image.source=URL
# (`make image` takes it from pyproject.toml's [project.urls], and adds none without one).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG PIP_INSTALL_OPTIONS=""
WORKDIR /src
COPY . /src
# hadolint ignore=SC2086
RUN python3 -m venv /opt/omgate \
    && /opt/omgate/bin/pip install --no-cache-dir --disable-pip-version-check \
       --require-hashes ${PIP_INSTALL_OPTIONS} -r /src/requirements.txt \
    && /opt/omgate/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
       ${PIP_INSTALL_OPTIONS} /src \
    && /opt/omgate/bin/pip uninstall --yes --disable-pip-version-check pip setuptools

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="omgate" \
      org.opencontainers.image.description="Receiving endpoint for Salesforce Outbound Messaging" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
RUN groupadd --system --gid 10001 omgate \
    && useradd --system --uid 10001 --gid omgate --no-create-home \
       --home-dir /var/lib/omgate --shell /usr/sbin/nologin omgate \
    && mkdir -p /var/lib/omgate /etc/omgate /certs \
    && chown omgate:omgate /var/lib/omgate
COPY --from=build /opt/omgate /opt/omgate
COPY config/container.toml /etc/omgate/omgate.toml
ENV PATH=/opt/omgate/bin:$PATH \
    OMGATE_CONFIG=/etc/omgate/omgate.toml \
    OMGATE_LOGGING__FORMAT=json \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/omgate
VOLUME ["/var/lib/omgate"]
EXPOSE 8443 9090
# OMGATE_HEALTH_URL: where the check asks, when server.health_bind is not the default.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('OMGATE_HEALTH_URL', 'http://127.0.0.1:9090/readyz'), timeout=2)"]
ENTRYPOINT ["omgate"]
CMD ["serve"]
