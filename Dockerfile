# syntax=docker/dockerfile:1
# widget-device-plugin: the device-plugin supervisor image deployed by charts/widget-plugin.
#
#   docker build -t REGISTRY/widget-device-plugin:0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" --build-arg CREATED="$(date -u +%FT%TZ)" .
#
# Two stages: the builder turns the source into a wheel; the final image installs only that wheel
# and its runtime dependencies (all published as binary wheels), so no compiler, no `build`
# package and no source tree end up in it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir build==1.2.2.post1
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps everything else out of the context).
COPY pyproject.toml README.md ./
COPY supervisor/ supervisor/
COPY plugin_worker/ plugin_worker/
COPY kubelet_standin/ kubelet_standin/
COPY dra_driver/ dra_driver/
COPY apiserver_standin/ apiserver_standin/
COPY fleet/ fleet/
# The bundled example configs: supervisor/examples is a symlink to them.
COPY config/examples/ config/examples/
RUN python -m build --wheel --outdir /dist

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="widget-device-plugin" \
      org.opencontainers.image.description="Kubernetes device-plugin supervisor advertising mock widget devices as extended resources" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/deploy.md in the source repository"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheel comes in through a bind mount, so it is not left behind in a layer.
RUN --mount=type=bind,from=builder,source=/dist,target=/dist \
    pip install --no-cache-dir /dist/*.whl \
    && widget-supervisor --version
EXPOSE 9464
# Runs as root, on purpose: the supervisor creates its gRPC sockets in the kubelet's
# /var/lib/kubelet/device-plugins and connects to kubelet.sock there, and both the directory and
# the socket belong to root with no group or other write access. A non-root user cannot do either.
# The chart keeps root harmless: every capability dropped, no privilege escalation, a read-only
# root filesystem, seccomp RuntimeDefault, and only the two kubelet directories mounted.
ENTRYPOINT ["widget-supervisor"]
CMD ["run", "--config", "/etc/widget-plugin/config.yaml"]
