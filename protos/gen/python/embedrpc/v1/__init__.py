"""Generated gRPC/protobuf stubs of protos/embedrpc/v1 (scripts/gen_protos.sh)."""
