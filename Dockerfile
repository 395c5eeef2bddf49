# bulkfhir: FHIR Bulk Data ($export) server.
#   docker build -t bulkfhir .
#   docker run -e DATABASE_URL=postgres://user:pass@db:5432/bulkfhir \
#     -e BULKFHIR_BASE_URL=https://fhir.example.org/fhir -p 8080:8080 bulkfhir
# Other subcommands: `docker run ... bulkfhir migrate`, `... bulkfhir load /data`.

# ---- build ------------------------------------------------------------------
# Same Debian release as the runtime image, so the binary's glibc matches.
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src

# Dependency layer: build all crates from Cargo.lock against stub sources, so
# that editing src/ does not recompile dependencies (plain layer caching, no
# BuildKit cache mounts needed).
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin bulkfhir \
 && rm -rf src

# The real build. migrations/ (sqlx::migrate!) and config/default.toml
# (include_str!) are embedded at compile time. touch makes the sources newer
# than the stub's artifacts, so cargo rebuilds the bulkfhir crate itself.
COPY src ./src
COPY migrations ./migrations
COPY config ./config
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin bulkfhir

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: the trust store of outgoing HTTPS (JWKS URLs, Azure, S3), so
# the binary's bundled fallback roots are not used; unpinned so that a rebuild
# takes bookworm's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Fixed UID/GID so volume ownership and runAsUser policies are predictable.
RUN groupadd --system --gid 10001 bulkfhir \
 && useradd --system --uid 10001 --gid bulkfhir --no-create-home \
      --home-dir /var/lib/bulkfhir --shell /usr/sbin/nologin bulkfhir \
 && mkdir -p /var/lib/bulkfhir/exports /var/lib/bulkfhir/data \
 && chown -R bulkfhir:bulkfhir /var/lib/bulkfhir

COPY --from=builder /src/target/release/bulkfhir /usr/local/bin/bulkfhir

# Every setting is BULKFHIR_<KEY> (or DATABASE_URL); only container-specific
# ones are fixed here. Set at run time: BULKFHIR_BASE_URL (the public URL: the
# default, http://0.0.0.0:8080/fhir, is not reachable by clients and ends up in
# manifest URLs) and, for production, DATABASE_URL=postgres://... (without it
# the store is the embedded SQLite file /var/lib/bulkfhir/data/bulkfhir.db).
ENV BULKFHIR_LISTEN=0.0.0.0:8080 \
    BULKFHIR_OUTPUT_DIR=/var/lib/bulkfhir/exports \
    BULKFHIR_LOG_FORMAT=json

# Numeric USER so Kubernetes runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/bulkfhir
EXPOSE 8080
# Declared after the chown so a fresh named volume inherits the ownership.
VOLUME ["/var/lib/bulkfhir/exports", "/var/lib/bulkfhir/data"]

# No curl in the slim image: bash's /dev/tcp sends a bare HTTP/1.0 request to
# /readyz (200 once the database answers, migrations are applied and the output
# destination is writable; 503 with the reason otherwise) on the port taken from
# BULKFHIR_LISTEN.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>\"/dev/tcp/127.0.0.1/${BULKFHIR_LISTEN##*:}\" && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r -t 4 _ code _ <&3 && [ \"$code\" = 200 ]"]

# Exec form: bulkfhir is PID 1 and gets SIGTERM directly (it shuts down
# gracefully on it).
ENTRYPOINT ["bulkfhir"]
CMD ["serve"]
