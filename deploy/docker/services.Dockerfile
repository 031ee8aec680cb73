# Redis and Prometheus for the CPU stack (deploy/cpu/docker-compose.yml), from Debian's packages
# on the same base as coe's images, so the stack builds where no image registry answers.
ARG BASE=python:3.11-slim

FROM ${BASE} AS redis
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
CMD ["redis-server", "--dir", "/data", "--appendonly", "yes"]

FROM ${BASE} AS prometheus
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus && chown prometheus:prometheus /prometheus
USER prometheus
WORKDIR /prometheus
CMD ["prometheus", "--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
