"""gRPC plumbing any front shares: requests parsed without ever raising (a malformed message
becomes INVALID_ARGUMENT, not UNKNOWN with a traceback) and services registered with them.

The generated `add_*Servicer_to_server` functions deserialize with `FromString`, whose
DecodeError (bad bytes, invalid UTF-8 in a string) gRPC reports as an unexpected exception.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from embedrpc.service.errors import invalid

log = logging.getLogger("embedrpc")


@dataclass(frozen=True)
class Malformed:
    """What arrived instead of a request message."""

    message_type: str
    reason: str

    def error(self, where: str = ""):
        log.warning("malformed %s%s: %s", self.message_type, where, self.reason)
        return invalid(f"malformed {self.message_type}{where}: {self.reason}")


def tolerant(message_class):
    """A request deserializer that returns `Malformed` instead of raising."""
    name = message_class.DESCRIPTOR.name

    def parse(data: bytes):
        try:
            return message_class.FromString(data)
        except (DecodeError, UnicodeDecodeError, ValueError) as exc:
            return Malformed(name, str(exc) or type(exc).__name__)

    return parse


def add_service(server, service_descriptor, servicer, pb_module) -> None:
    """Register `servicer`'s methods for `service_descriptor` with tolerant deserializers."""
    handlers = {}
    for method in service_descriptor.methods:
        request = getattr(pb_module, method.input_type.name)
        response = getattr(pb_module, method.output_type.name)
        make = {(False, False): grpc.unary_unary_rpc_method_handler,
                (False, True): grpc.unary_stream_rpc_method_handler,
                (True, False): grpc.stream_unary_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler}[
            (method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(getattr(servicer, method.name),
                                     request_deserializer=tolerant(request),
                                     response_serializer=response.SerializeToString)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service_descriptor.full_name, handlers),))
