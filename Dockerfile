# stream-migrator worker image: capture, transform, reconciler and controller all run
# from it (`stream-migrator <command>`). Slim base, no compiler in the final image,
# non-root user, /metrics + /healthz + /readyz on port 9400.
#
#   docker build -t stream-migrator .
#   docker run --rm stream-migrator config
FROM python:3.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY stream_migrator ./stream_migrator
# Editable on purpose: events.py reads schemas/ beside the package, so the code runs
# from /app (copied as is below) and the venv only points at it.
RUN python -m venv /opt/stream-migrator \
    && /opt/stream-migrator/bin/pip install --no-compile -e . \
    && /opt/stream-migrator/bin/pip uninstall --yes pip

FROM python:3.12-slim-bookworm
LABEL org.opencontainers.image.title="stream-migrator" \
      org.opencontainers.image.description="Move a live MongoDB collection to a new document shape with no downtime" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 sm \
    && useradd --system --uid 10001 --gid sm --home-dir /nonexistent --shell /usr/sbin/nologin sm
COPY --from=build /opt/stream-migrator /opt/stream-migrator
COPY --from=build /app /app
ENV PATH=/opt/stream-migrator/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SM_METRICS_HOST=0.0.0.0 \
    SM_METRICS_PORT=9400
WORKDIR /app
USER 10001:10001
EXPOSE 9400
# Docker's own check uses liveness; orchestrators should probe /healthz and /readyz.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['SM_METRICS_PORT'] + '/healthz', timeout=2)"]
# SIGTERM drains, flushes, commits and exits 0 (see README); give it time to.
STOPSIGNAL SIGTERM
ENTRYPOINT ["stream-migrator"]
CMD ["transform"]
