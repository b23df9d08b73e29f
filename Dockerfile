# One image for every Stanna service: `stanna serve registry|auth-check|quota|gateway`, or
# `stanna serve` for the whole system in one container (SQLite in /home/nonroot).
#
# Build stage: the full Rust toolchain (protox compiles the protos in Rust; no protoc needed).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p stanna --bin stanna \
 && strip target/release/stanna

# Runtime: distroless glibc, no shell, no package manager, runs as uid 65532 (nonroot).
# Health checks call `stanna healthcheck`, so the image needs no probe binary.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/stanna /usr/local/bin/stanna
WORKDIR /home/nonroot
USER nonroot
EXPOSE 8080 50051 50052 50053 9464
ENTRYPOINT ["/usr/local/bin/stanna"]
CMD ["serve"]
