#!/usr/bin/env bash
# Build the Java client into OUT (default clients/java/build): stubs generated from protos/
# with protoc's java generator and Debian's grpc_java_plugin, compiled with javac against the
# jars Debian installs in /usr/share/java (libgrpc-java, libprotobuf-java, libnetty-java,
# libgoogle-gson-java, libperfmark-java, libguava-java, and the javax.annotation API the
# generated stubs name: libgeronimo-annotation-1.3-spec-java): no Maven repository needed.
# Prints the launcher script's path.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$(mkdir -p "${1:-$HERE/build}" && cd "${1:-$HERE/build}" && pwd)
JARS=/usr/share/java
CLASSPATH=$(printf '%s:' "$JARS"/grpc-{api,context,core,netty,protobuf,protobuf-lite,stub}.jar \
  "$JARS"/protobuf.jar "$JARS"/guava.jar "$JARS"/gson.jar \
  "$JARS"/geronimo-annotation-1.3-spec.jar \
  "$JARS"/perfmark-api.jar "$JARS"/netty-{buffer,codec,codec-http,codec-http2,codec-socks,common,handler,handler-proxy,resolver,transport}.jar)
mkdir -p "$OUT/generated" "$OUT/classes"
protoc -I"$ROOT/protos" --java_out="$OUT/generated" \
  --plugin=protoc-gen-grpc-java=/usr/bin/grpc_java_plugin \
  --grpc-java_out="$OUT/generated" \
  "$ROOT/protos/embedrpc/v1/embedding.proto"
javac -nowarn -encoding UTF-8 -d "$OUT/classes" -cp "$CLASSPATH" \
  $(find "$OUT/generated" -name '*.java') "$HERE/EmbedrpcClient.java"
cat > "$OUT/embedrpc-client" <<LAUNCHER
#!/bin/sh
exec java -cp "$OUT/classes:$CLASSPATH" dev.embedrpc.client.EmbedrpcClient "\$@"
LAUNCHER
chmod +x "$OUT/embedrpc-client"
echo "$OUT/embedrpc-client"
