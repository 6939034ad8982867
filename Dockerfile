# Build: docker build -t failover:latest .
# Run:   docker run --rm -p 8080:8080 failover:latest --primary=http://... --backup=http://...

# ---- build stage: the release binary, from the committed Cargo.lock
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
 && install -m 0755 target/release/failover /usr/local/bin/failover

# ---- runtime stage: only the binary, on slim Debian, as an unprivileged user
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 failover \
 && useradd --system --uid 10001 --gid failover --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin failover
COPY --from=builder /usr/local/bin/failover /usr/local/bin/failover
# The shipped maintenance page, for --backup=file:///usr/share/failover/sorry
COPY --from=builder /src/examples/sorry /usr/share/failover/sorry
USER failover:failover
EXPOSE 8080
# The binary checks itself (no curl in the slim image); with another --listen port, override
# this with `docker run --health-cmd`.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/failover", "probe", "http://127.0.0.1:8080/__failover/live"]
ENTRYPOINT ["/usr/local/bin/failover"]
