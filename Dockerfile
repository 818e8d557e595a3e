# syntax=docker/dockerfile:1
# The operator's image: one static binary on an empty base, run as non-root 65532.
# `make image` builds the same image on a machine without a container engine
# (deploy/image/build.sh); the release workflow builds this file for amd64 and arm64.
ARG RUST_IMAGE=rust:1.95-bookworm

FROM ${RUST_IMAGE} AS build
ARG TARGETPLATFORM
WORKDIR /src
COPY . .
# Statically linked against glibc (crt-static), so the final stage needs no libc. RUSTFLAGS
# apply to the target only, since --target is given: build scripts stay dynamic.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=target-${TARGETPLATFORM} \
    triple="$(uname -m)-unknown-linux-gnu" \
 && env "CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS=-C target-feature=+crt-static" \
    cargo build --release --locked --target "$triple" --bin armor-refresh \
 && strip -o /armor-refresh "target/$triple/release/armor-refresh" \
 && if readelf -lW /armor-refresh | grep -q INTERP; then echo "not static" >&2; exit 1; fi \
 && printf 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >/passwd \
 && printf 'nonroot:x:65532:\n' >/group

FROM scratch
ARG VERSION=0.2.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="armor-refresh" \
      org.opencontainers.image.description="Rolls AppArmor/KubeArmor profiles out to running pods gradually and safely" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /armor-refresh /armor-refresh
COPY --from=build /passwd /etc/passwd
COPY --from=build /group /etc/group
USER 65532:65532
ENTRYPOINT ["/armor-refresh"]
