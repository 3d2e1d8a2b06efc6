# syncd in a container. Point it at your PostgreSQL with SYNCD_DATABASE_URL (run `syncd migrate`
# once, e.g. `docker run --rm -e SYNCD_DATABASE_URL=... syncd syncd migrate`), or leave it unset
# to use the embedded PostgreSQL in the /data volume. A container listens on 0.0.0.0, so choose
# an authentication mode (SYNCD_AUTH_MODE, see README "Deploying next to your API"); mode none
# is refused on a public address unless SYNCD_AUTH_NONE_ALLOW_PUBLIC=true.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY syncd ./syncd
COPY migrations ./migrations
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 syncd \
    && mkdir /data && chown syncd:syncd /data

USER syncd
ENV SYNCD_HOST=0.0.0.0 \
    SYNCD_PORT=8080 \
    SYNCD_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz')"
CMD ["syncd", "serve"]
