"""`embedrpc embed`: a small gRPC client that prints the response as JSON."""

from __future__ import annotations

import json
import sys

import grpc
from google.protobuf.json_format import MessageToDict

from embedrpc.service.protocol import ENCODING_NAMES, TASK_NAMES, TRUNCATION_NAMES
from embedrpc.v1 import embedding_pb2 as pb
from embedrpc.v1 import embedding_pb2_grpc as pb_grpc


def add_arguments(parser) -> None:
    parser.add_argument("texts", nargs="*", help="texts to embed (default: one per stdin line)")
    parser.add_argument("--target", default="localhost:50051", help="server HOST:PORT")
    parser.add_argument("--task", choices=TASK_NAMES, default="default")
    parser.add_argument("--dimensions", type=int, help="Matryoshka size")
    parser.add_argument("--no-normalize", action="store_true",
                        help="do not re-normalise after Matryoshka truncation")
    parser.add_argument("--truncation", choices=TRUNCATION_NAMES, default="none")
    parser.add_argument("--encoding", choices=ENCODING_NAMES, default="float32")
    parser.add_argument("--info", action="store_true", help="print GetInfo instead")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")


def run(args) -> int:
    with grpc.insecure_channel(args.target) as channel:
        stub = pb_grpc.EmbeddingServiceStub(channel)
        try:
            if args.info:
                response = stub.GetInfo(pb.GetInfoRequest(), timeout=args.timeout)
            else:
                texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
                request = pb.EmbedRequest(inputs=texts, task=TASK_NAMES[args.task],
                                          truncation=TRUNCATION_NAMES[args.truncation],
                                          encoding=ENCODING_NAMES[args.encoding])
                if args.dimensions:
                    request.dimensions = args.dimensions
                if args.no_normalize:
                    request.normalize = False
                response = stub.Embed(request, timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"embedrpc: error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=1))
    return 0


def add_health_arguments(parser) -> None:
    parser.add_argument("--target", default="127.0.0.1:50051", help="server HOST:PORT")
    parser.add_argument("--service", default="", help="service name ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0)


def run_health(args) -> int:
    """Exit 0 when the gRPC health service says SERVING (a container HEALTHCHECK)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(args.target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"embedrpc: unhealthy: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1
