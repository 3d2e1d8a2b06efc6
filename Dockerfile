# syncd in a container. Point it at your PostgreSQL with SYNCD_DATABASE_URL (run `syncd migrate`
# once, e.g. `docker run --rm -e SYNCD_DATABASE_URL=... syncd syncd migrate`), or leave it unset
# to use the embedded PostgreSQL in the /data volume. A container listens on 0.0.0.0, so choose
# an authentication mode (SYNCD_AUTH_MODE, see README "Deploying next to your API"); mode none
# is refused on a public address unless SYNCD_AUTH_NONE_ALLOW_PUBLIC=true.
#
# Stopping: on SIGTERM syncd drains for up to 10 s (streams told to reconnect, requests in
# flight finished), then stops the embedded PostgreSQL. Docker's default grace before SIGKILL is
# also 10 s, so give it more: `docker stop -t 20`, `docker run --stop-timeout 20`, compose
# `stop_grace_period: 20s` (Kubernetes' default terminationGracePeriodSeconds, 30, is enough).
#
# Any user id: `docker run --user 12345` and OpenShift's arbitrary uids (group 0) can use /data,
# and nss_wrapper lets the embedded PostgreSQL's initdb run under a uid with no passwd entry.

# bookworm: the Debian release the apt pin below is for; Python 3.11 patch releases (security
# fixes) are taken as they come.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends libnss-wrapper=1.1.12-1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY docker/constraints.txt ./docker/constraints.txt
COPY syncd ./syncd
COPY migrations ./migrations
# Every dependency at the version the tests ran on (docker/constraints.txt).
RUN pip install --no-cache-dir --constraint docker/constraints.txt . \
    && useradd --create-home --uid 10001 --gid 0 syncd \
    && mkdir /data && chown 10001:0 /data && chmod 0770 /data

USER 10001
ENV SYNCD_HOST=0.0.0.0 \
    SYNCD_PORT=8080 \
    SYNCD_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080
STOPSIGNAL SIGTERM
# /readyz is 503 while syncd creates the embedded PostgreSQL or waits for SYNCD_DATABASE_URL
# (SYNCD_DATABASE_WAIT_SECONDS, 60 s by default): failures in the start period do not count.
HEALTHCHECK --interval=10s --timeout=3s --start-period=90s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz')"
CMD ["syncd", "serve"]
