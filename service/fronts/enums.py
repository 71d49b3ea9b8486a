"""The embedrpc.v1 wire enums and what they mean in the core: one table per enum, shared by
the gRPC servicer and the `embedrpc embed` client."""

from __future__ import annotations

from embedrpc.service.bundle.tokenizer import Truncation
from embedrpc.service.core.encoding import Encoding
from embedrpc.service.errors import invalid
from embedrpc.v1 import embedding_pb2 as pb

TASKS = {pb.TASK_QUERY: "query", pb.TASK_DOCUMENT: "document"}  # prompt names
TRUNCATIONS = {pb.TRUNCATION_UNSPECIFIED: Truncation.NONE, pb.TRUNCATION_RIGHT: Truncation.RIGHT,
               pb.TRUNCATION_LEFT: Truncation.LEFT}
ENCODINGS = {pb.ENCODING_FLOAT32: Encoding.FLOAT32, pb.ENCODING_INT8: Encoding.INT8,
             pb.ENCODING_UINT8: Encoding.UINT8, pb.ENCODING_BINARY: Encoding.BINARY,
             pb.ENCODING_UBINARY: Encoding.UBINARY}
ENCODING_ENUMS = {encoding: number for number, encoding in ENCODINGS.items()}

# The client's names for them: what `embedrpc embed --task/--truncation/--encoding` take.
TASK_NAMES = {"default": pb.TASK_UNSPECIFIED, **{name: number for number, name in TASKS.items()}}
TRUNCATION_NAMES = {truncation.value: number for number, truncation in TRUNCATIONS.items()}
ENCODING_NAMES = {encoding.value: number for number, encoding in ENCODINGS.items()}


def prompt_name(task: int) -> str | None:
    """The prompt a Task asks for; None: the model's default."""
    if task == pb.TASK_UNSPECIFIED:
        return None
    if task not in TASKS:
        raise invalid(f"task {task} is not a known Task", "task")
    return TASKS[task]


def truncation(number: int) -> Truncation:
    if number not in TRUNCATIONS:
        raise invalid(f"truncation {number} is not a known Truncation", "truncation")
    return TRUNCATIONS[number]


def encoding(number: int) -> Encoding:
    if number == pb.ENCODING_UNSPECIFIED:
        return Encoding.FLOAT32
    if number not in ENCODINGS:
        raise invalid(f"encoding {number} is not a known Encoding", "encoding")
    return ENCODINGS[number]
