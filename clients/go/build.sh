#!/usr/bin/env bash
# Build the Go client into OUT (default clients/go/build): stubs generated from protos/ with
# Debian's protoc-gen-go and protoc-gen-go-grpc, compiled in GOPATH mode against Debian's
# packaged Go sources (golang-google-grpc-dev, golang-google-protobuf-dev): no module proxy.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$(mkdir -p "${1:-$HERE/build}" && cd "${1:-$HERE/build}" && pwd)
GEN="$OUT/gopath/src/github.com/embedrpc/embedrpc/gen/go"
mkdir -p "$GEN" "$OUT/gopath/src/embedrpc-client"
protoc -I"$ROOT/protos" --go_out="$GEN" --go_opt=paths=source_relative \
  --go-grpc_out="$GEN" --go-grpc_opt=paths=source_relative \
  "$ROOT/protos/embedrpc/v1/embedding.proto"
cp "$HERE/main.go" "$OUT/gopath/src/embedrpc-client/"
cd "$OUT/gopath/src/embedrpc-client"
GO111MODULE=off GOPATH="$OUT/gopath:/usr/share/gocode" GOCACHE="$OUT/cache" \
  go build -o "$OUT/embedrpc-client" .
echo "$OUT/embedrpc-client"
