"""embedrpc.v1.EmbeddingService over gRPC: converts messages to and from the core's types
(service/core/embedder.py); errors, metrics and streams are grpc_wire.py's, shared with every
gRPC front."""

from __future__ import annotations

from embedrpc.service.core.embedder import Embedded, Embedder, EmbedOptions
from embedrpc.service.core.encoding import Encoding
from embedrpc.service.fronts import enums
from embedrpc.service.fronts.grpc_wire import OrderedStreams, add_service, unary
from embedrpc.v1 import embedding_pb2 as pb
from embedrpc.v1 import embedding_pb2_grpc as pb_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["EmbeddingService"]


def embed_options(request) -> EmbedOptions:
    return EmbedOptions(
        prompt_name=enums.prompt_name(request.task),
        truncation=enums.truncation(request.truncation),
        dimensions=request.dimensions if request.HasField("dimensions") else None,
        normalize=request.normalize if request.HasField("normalize") else None,
        encoding=enums.encoding(request.encoding), task=request.adapter or None)


def usage(token_counts: list[int]) -> pb.Usage:
    return pb.Usage(input_tokens=sum(token_counts), input_token_counts=token_counts)


class EmbeddingServicer(pb_grpc.EmbeddingServiceServicer):
    def __init__(self, embedder: Embedder, metrics):
        self.embedder, self.metrics = embedder, metrics
        self.streams = OrderedStreams(metrics)

    def add_to(self, server) -> None:
        add_service(server, SERVICE, self, pb)

    @unary("Embed")
    async def Embed(self, request, context):
        return await self._embed(request)

    async def EmbedStream(self, request_iterator, context):
        async for response in self.streams.serve(
                request_iterator, context, "EmbedStream",
                lambda request: self._embed(request, wait_for_room=True),
                lambda request: repr(request.id) if request.id else ""):
            yield response

    @unary("Tokenize")
    async def Tokenize(self, request, context):
        options = EmbedOptions(prompt_name=enums.prompt_name(request.task),
                               truncation=enums.truncation(request.truncation))
        tokenized = await self.embedder.tokenize(list(request.inputs), options)
        return pb.TokenizeResponse(
            results=[pb.TokenizedInput(ids=ids, tokens=tokens)
                     for ids, tokens in zip(tokenized.ids, tokenized.tokens, strict=True)],
            usage=usage([len(ids) for ids in tokenized.ids]))

    @unary("GetInfo")
    async def GetInfo(self, request, context):
        info = self.embedder.info()
        return pb.GetInfoResponse(
            model=info.model, revision=info.revision, task=info.task, runtime=info.runtime,
            runtime_reason=info.runtime_reason, artifact=info.artifact,
            precision=info.precision, hidden_size=info.hidden_size,
            matryoshka_dimensions=info.matryoshka_dims, max_input_tokens=info.max_input_tokens,
            prompts=info.prompts, default_prompt_name=info.default_prompt_name,
            max_batch_tokens=info.max_batch_tokens, max_queue=info.max_queue,
            server_version=info.server_version, tasks=info.tasks)

    async def _embed(self, request, wait_for_room: bool = False) -> pb.EmbedResponse:
        embedded = await self.embedder.embed(list(request.inputs), embed_options(request),
                                             wait_for_room)
        return pb.EmbedResponse(id=request.id, embeddings=_embeddings(embedded),
                                dimensions=embedded.dims, usage=usage(embedded.token_counts),
                                model=self.embedder.manifest.source.public_name,
                                encoding=enums.ENCODING_ENUMS[embedded.encoding])


def _embeddings(embedded: Embedded) -> list[pb.Embedding]:
    if embedded.encoding is Encoding.FLOAT32:
        return [pb.Embedding(values=row.tolist()) for row in embedded.rows]
    return [pb.Embedding(packed=row.tobytes()) for row in embedded.rows]
