# domainwatch container image.
#   docker build -t domainwatch .
#   docker run -d -p 9877:9877 \
#     -v /srv/domainwatch:/etc/domainwatch:ro \
#     -v domainwatch-state:/var/lib/domainwatch domainwatch
# Config is read from /etc/domainwatch/config.yml (mount it read-only; mount the folder rather than
# the file so that an edited file is seen on SIGHUP); the last results survive restarts in
# /var/lib/domainwatch/state.json (mount a volume there). See the Deploy section of README.md.
# CI builds this file unchanged and runs it (.ci/image-test): non-root, read-only root filesystem,
# no capabilities, /metrics, the HEALTHCHECK, SIGHUP reload, state across a restart.

# Base: python:3.11-slim (Debian trixie). CI cannot pull images: it stands in for it with an image
# built from trixie's own packages (whose Python is 3.13; the test suite covers 3.11 on the host).

# ---- build: wheels for the dependencies and for domainwatch itself ----
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so that editing the code reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip wheel --wheel-dir /wheels/deps -r requirements.txt
# LICENSE: pyproject's license-files; the wheel carries it.
COPY README.md LICENSE ./
COPY exporter ./exporter
RUN pip wheel --no-deps --wheel-dir /wheels/app .

# ---- runtime ----
FROM python:3.11-slim
LABEL org.opencontainers.image.title="domainwatch" \
      org.opencontainers.image.description="Prometheus exporter for domain registration, delegation and contact health" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/domainwatch/domainwatch"
# No .pyc written at run time: the root filesystem may be read-only (the Helm chart makes it so);
# pip compiles the installed modules at build time instead.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A fixed numeric uid/gid, so that orchestrators can verify runAsNonRoot and volume owners match.
# (Not --system for the user: useradd warns about a system uid above SYS_UID_MAX.)
RUN groupadd --gid 10001 domainwatch \
 && useradd --uid 10001 --gid domainwatch --no-create-home \
      --home-dir /var/lib/domainwatch --shell /usr/sbin/nologin domainwatch \
 && mkdir -p /etc/domainwatch /var/lib/domainwatch \
 && chown domainwatch:domainwatch /var/lib/domainwatch
# Two layers: the dependencies change rarely, the application on every release.
COPY --from=build /wheels/deps /tmp/wheels/deps
RUN pip install --no-index /tmp/wheels/deps/*.whl && rm -rf /tmp/wheels/deps
COPY --from=build /wheels/app /tmp/wheels/app
RUN pip install --no-index --no-deps /tmp/wheels/app/*.whl && rm -rf /tmp/wheels/app

USER 10001:10001
WORKDIR /var/lib/domainwatch
VOLUME ["/var/lib/domainwatch"]
EXPOSE 9877
# The slim image has no curl: ask /-/healthy with the standard library. The port must match
# --web.listen-address; override HEALTHCHECK if you change it. (Docker and `podman build
# --format docker` keep it; an OCI-format image drops it.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9877/-/healthy', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["domainwatch"]
CMD ["--config.file", "/etc/domainwatch/config.yml", "--state.file", "/var/lib/domainwatch/state.json", "--web.listen-address", ":9877"]
