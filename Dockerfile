# syntax=docker/dockerfile:1
#
# Relay in a container: a static binary (CGO_ENABLED=0) on distroless
# static, running as an unprivileged user, JetStream storage on a volume.
#
#   docker build -t relay --build-arg VERSION=v1.2.3 --build-arg COMMIT=$(git rev-parse HEAD) .
#   docker run -p 8080:8080 -v relay-data:/data \
#     -e ANTHROPIC_API_KEY -e OPENAI_API_KEY -e RELAY_KEY -e RELAY_ADMIN_TOKEN relay
#
# The image's configuration is deploy/container.yaml; mount your own over
# /etc/relay/relay.yaml (or point RELAY_CONFIG elsewhere). The build
# context has no .git (see .dockerignore), so version and commit come from
# the build arguments through -ldflags (see `relay version`).

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=
# cmd/relay/deploy_test.go runs this very command (the line below, with
# its continuation) and checks the binary it makes.
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false \
    -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
    -o /out/relay ./cmd/relay
RUN mkdir -p /out/data/nats

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/relay /usr/local/bin/relay
COPY --from=build --chown=65532:65532 /out/data /data
COPY deploy/container.yaml /etc/relay/relay.yaml
ENV RELAY_CONFIG=/etc/relay/relay.yaml
# distroless's "nonroot" user; /data is its own.
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
# 8080: the API, /metrics, /healthz, /readyz. 8081: admin (status page,
# pprof); publish it only on a private network.
EXPOSE 8080 8081
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/relay", "healthcheck", "--url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/relay"]
CMD ["serve"]
