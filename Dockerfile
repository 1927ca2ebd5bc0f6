# Roster's image: the `roster` binary on Debian 12 slim with what the Slurm backend needs.
# Not built in this repository's CI (no container engine there): build it with
#   docker build -t registry.example.org/hpc/roster:0.1.0 .     (or podman/buildah/kaniko)
# and set the chart's image.repository/tag to it.

# --- build: the release binary, with the same Debian 12 (glibc) as the runtime stage -----------
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin roster \
    && rm -rf src
COPY src ./src
# The real sources are newer than the stub's build; touch makes sure cargo sees it.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin roster \
    && install -m 0755 target/release/roster /usr/local/bin/roster

# --- runtime ----------------------------------------------------------------------------------
FROM docker.io/library/debian:bookworm-slim
# slurm-client: sacctmgr, which Roster runs (argument vectors, never a shell) to write Slurm
# accounting. munge: libmunge for sacctmgr's auth/munge, and munged, which the chart runs as a
# sidecar from this same image. ca-certificates: the system roots for ldaps/startTLS when no
# CA file is configured.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        slurm-client munge ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 roster \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin roster
COPY --from=build /usr/local/bin/roster /usr/local/bin/roster
USER 65532:65532
LABEL org.opencontainers.image.title="roster" \
      org.opencontainers.image.description="Declarative people, accounts, projects and guests for HPC sites" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/local/bin/roster"]
CMD ["run", "--config", "/etc/roster/config/roster.yaml"]
