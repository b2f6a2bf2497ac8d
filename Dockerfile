# syntax=docker/dockerfile:1
# One image for every Tessera service: `docker run IMAGE run <service>` (see deploy/README.md).
# The base is pinned to an exact tag; pin it by digest too in your registry mirror
# (FROM python:3.11.14-slim-bookworm@sha256:…) once you have pulled and verified it.

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/tessera
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY connectors ./connectors
COPY tessera ./tessera
# A plain (not editable) install: the runtime stage needs the venv only, no sources.
RUN /opt/tessera/bin/pip install . && /opt/tessera/bin/python -m compileall -q /opt/tessera

FROM python:3.11.14-slim-bookworm AS runtime
ARG TESSERA_UID=10001
RUN groupadd --system --gid ${TESSERA_UID} tessera \
 && useradd --system --uid ${TESSERA_UID} --gid tessera --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin tessera
COPY --from=build /opt/tessera /opt/tessera
# Listen on every interface inside the pod; logs as JSON lines; a read-only root
# filesystem leaves /tmp (an emptyDir in the chart) as the only writable place.
ENV PATH=/opt/tessera/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TESSERA_HTTP_HOST=0.0.0.0 \
    TESSERA_HTTP_PORT=8000 \
    TESSERA_OPS_HOST=0.0.0.0 \
    TESSERA_OPS_PORT=9090 \
    TESSERA_LOG_FORMAT=json \
    TESSERA_LOG_LEVEL=INFO \
    TESSERA_DATA_DIR=/tmp/tessera
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 9090
ENTRYPOINT ["tessera"]
CMD ["run", "gateway"]
