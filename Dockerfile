# The shardgate binary in a small image. Built by docker-compose.yml; also usable alone:
#   docker build -t shardgate . && docker run -v $PWD/shardgate.toml:/etc/shardgate/shardgate.toml shardgate
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The manifest names the benchmark programs, so their sources must be present to build.
COPY benches ./benches
COPY src ./src
RUN cargo build --release --locked --bin shardgate

FROM debian:bookworm-slim
RUN useradd --system --no-create-home shardgate
COPY --from=build /src/target/release/shardgate /usr/local/bin/shardgate
USER shardgate
EXPOSE 6432 9930
ENTRYPOINT ["shardgate"]
CMD ["--config", "/etc/shardgate/shardgate.toml"]
