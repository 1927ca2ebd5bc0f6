# Roster's image: the `roster` binary on Debian 12 slim with what the Slurm backend needs.
# A site builds it with
#   docker build -t registry.example.org/hpc/roster:0.1.0 .     (or podman/buildah/kaniko)
# and sets the chart's image.repository/tag to it. `make image` builds the same file here with
# podman, where no registry can be pulled from: the runtime base is a debootstrapped Debian 12
# (RUNTIME_BASE) and the binary the host's release build (BINARY_FROM=prebuilt, bin/roster in
# the context); buildah then skips the Rust stage.
ARG RUNTIME_BASE=docker.io/library/debian:bookworm-slim
ARG BINARY_FROM=build

# --- build: the release binary, with the same Debian 12 (glibc) as the runtime stage -----------
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# The workspace: the product crate and the test-only Gold server its tests depend on (cargo
# resolves the whole workspace; only `roster` is built).
COPY Cargo.toml Cargo.lock ./
COPY testing/gold-server ./testing/gold-server
COPY src ./src
RUN cargo build --release --locked -p roster --bin roster \
    && install -m 0755 target/release/roster /usr/local/bin/roster

# --- or a binary built elsewhere (bin/roster in the build context) -----------------------------
FROM scratch AS prebuilt
COPY bin/roster /usr/local/bin/roster

FROM ${BINARY_FROM} AS binary

# --- runtime ----------------------------------------------------------------------------------
FROM ${RUNTIME_BASE}
# slurm-client: sacctmgr, which Roster runs (argument vectors, never a shell) to write Slurm
# accounting. munge: libmunge for sacctmgr's auth/munge, and munged, which the chart runs as a
# sidecar from this same image. ca-certificates: the system roots for ldaps/startTLS when no
# CA file is configured. No apt lists are kept.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        slurm-client munge ca-certificates \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
    && groupadd --gid 65532 roster \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin roster
COPY --from=binary /usr/local/bin/roster /usr/local/bin/roster
USER 65532:65532
LABEL org.opencontainers.image.title="roster" \
      org.opencontainers.image.description="Declarative people, accounts, projects and guests for HPC sites" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/local/bin/roster"]
CMD ["run", "--config", "/etc/roster/config/roster.yaml"]
