# bundle-router as a sidecar image: slim, non-root, health-checked.
#   docker build -t bundle-router .
#   docker run -v $PWD/config:/etc/bundle-router:ro -v router-run:/var/run/bundle-router bundle-router
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY router ./router
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN groupadd --system --gid 10001 router \
 && useradd --system --uid 10001 --gid router --home-dir /nonexistent --shell /usr/sbin/nologin router \
 && install -d -o router -g router -m 0700 /var/run/bundle-router /var/lib/bundle-router
COPY --chown=root:root config /etc/bundle-router
USER router
# The admin socket (0600, in a 0700 folder) and durable state live on volumes.
VOLUME ["/var/run/bundle-router", "/var/lib/bundle-router"]
EXPOSE 8080 9464
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["bundle-router"]
CMD ["serve", "--config", "/etc/bundle-router/router.yaml"]
