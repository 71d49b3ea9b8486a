"""`embedrpc embed` and `embedrpc health`: small gRPC clients (TLS, mTLS and API keys too)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict

from embedrpc.service.fronts.enums import ENCODING_NAMES, TASK_NAMES, TRUNCATION_NAMES
from embedrpc.v1 import embedding_pb2 as pb
from embedrpc.v1 import embedding_pb2_grpc as pb_grpc


def add_connection_arguments(parser, default_target: str, timeout: float) -> None:
    parser.add_argument("--target", default=default_target, help="server HOST:PORT")
    parser.add_argument("--timeout", type=float, default=timeout, help="deadline in seconds")
    parser.add_argument("--tls", action="store_true",
                        help="connect with TLS, trusting the system's CAs (or --tls-ca)")
    parser.add_argument("--tls-ca", help="PEM CA bundle that signed the server's certificate "
                                         "(implies --tls)")
    parser.add_argument("--tls-cert", help="PEM client certificate, for servers asking mTLS")
    parser.add_argument("--tls-key", help="PEM key of --tls-cert")
    parser.add_argument("--tls-server-name", help="the name the server's certificate must "
                                                  "carry, when it differs from --target's host")
    parser.add_argument("--api-key-file", help="file whose first line is the API key sent as "
                                               "'authorization: Bearer <key>' (default: the "
                                               "EMBEDRPC_API_KEY variable)")


def open_channel(args) -> grpc.Channel:
    if not (args.tls or args.tls_ca or args.tls_cert):
        return grpc.insecure_channel(args.target)
    credentials = grpc.ssl_channel_credentials(_read(args.tls_ca), _read(args.tls_key),
                                               _read(args.tls_cert))
    options = [("grpc.ssl_target_name_override", args.tls_server_name)] \
        if args.tls_server_name else []
    return grpc.secure_channel(args.target, credentials, options=options)


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def call_metadata(args) -> list[tuple[str, str]]:
    key = os.environ.get("EMBEDRPC_API_KEY")
    if args.api_key_file:
        key = Path(args.api_key_file).read_text().splitlines()[0].strip()
    return [("authorization", f"Bearer {key}")] if key else []


def add_arguments(parser) -> None:
    parser.add_argument("texts", nargs="*", help="texts to embed (default: one per stdin line)")
    add_connection_arguments(parser, "localhost:50051", 60.0)
    parser.add_argument("--task", choices=TASK_NAMES, default="default",
                        help="the prompt: query or document")
    parser.add_argument("--adapter", default="",
                        help="the model task of a bundle with several (GetInfo lists them)")
    parser.add_argument("--dimensions", type=int, help="Matryoshka size")
    parser.add_argument("--no-normalize", action="store_true",
                        help="do not re-normalise after Matryoshka truncation")
    parser.add_argument("--truncation", choices=TRUNCATION_NAMES, default="none")
    parser.add_argument("--encoding", choices=ENCODING_NAMES, default="float32")
    parser.add_argument("--info", action="store_true", help="print GetInfo instead")


def run(args) -> int:
    with open_channel(args) as channel:
        stub = pb_grpc.EmbeddingServiceStub(channel)
        metadata = call_metadata(args)
        try:
            if args.info:
                response = stub.GetInfo(pb.GetInfoRequest(), timeout=args.timeout,
                                        metadata=metadata)
            else:
                texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
                request = pb.EmbedRequest(inputs=texts, task=TASK_NAMES[args.task],
                                          truncation=TRUNCATION_NAMES[args.truncation],
                                          encoding=ENCODING_NAMES[args.encoding],
                                          adapter=args.adapter)
                if args.dimensions:
                    request.dimensions = args.dimensions
                if args.no_normalize:
                    request.normalize = False
                response = stub.Embed(request, timeout=args.timeout, metadata=metadata)
        except grpc.RpcError as error:
            print(f"embedrpc: error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=1))
    return 0


def add_health_arguments(parser) -> None:
    add_connection_arguments(parser, "127.0.0.1:50051", 3.0)
    parser.add_argument("--service", default="", help="service name ('' = the whole server)")


def run_health(args) -> int:
    """Exit 0 when the gRPC health service says SERVING (a container HEALTHCHECK)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with open_channel(args) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"embedrpc: unhealthy: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1
