"""A text-embeddings-inference compatible front (`tei.v1`, `--tei-compat`): TEI's gRPC clients
talk to embedrpc unchanged. A thin file: it converts TEI's messages to the core's calls and
back; limits, errors, batching and streams are the core's and grpc_wire.py's, as for
embedrpc.v1.

Differences from TEI (README: "TEI-compatible front"): one input per Embed call, as in TEI;
`normalize=false` returns Matryoshka prefixes as they are, but the full vector is always unit
length (the model's own last module normalises); Metadata reports characters, tokens,
tokenisation and total time (queue and inference time: 0); EmbedAll, EmbedSparse, Predict and
Rerank are UNIMPLEMENTED, naming what embedrpc offers instead.
"""

from __future__ import annotations

import grpc

from embedrpc.service import __version__
from embedrpc.service.bundle.tokenizer import Truncation
from embedrpc.service.core.embedder import Embedded, Embedder, EmbedOptions
from embedrpc.service.errors import invalid
from embedrpc.service.fronts.grpc_wire import OrderedStreams, add_service, unary
from embedrpc.tei.v1 import tei_pb2 as tei

SERVICES = list(tei.DESCRIPTOR.services_by_name.values())
TRUNCATIONS = {tei.TRUNCATION_DIRECTION_RIGHT: Truncation.RIGHT,
               tei.TRUNCATION_DIRECTION_LEFT: Truncation.LEFT}
ALTERNATIVES = {
    "EmbedSparse": "this is a dense embedding model: use Embed",
    "EmbedAll": "per-token vectors are not served: use Embed (last-token pooling), or "
                "embedrpc.v1.EmbeddingService/Tokenize for the tokens",
    "Predict": "this is an embedding model, not a classifier: use Embed, or "
               "embedrpc.v1.EmbeddingService/Embed",
    "PredictPair": "this is an embedding model, not a classifier: use Embed",
    "Rerank": "this is an embedding model, not a reranker: embed the query (prompt_name "
              "'query') and the texts (prompt_name 'document') with Embed, or many at once "
              "with embedrpc.v1.EmbeddingService/Embed, and rank by cosine similarity",
}


def _unimplemented(method: str, streaming: bool):
    reason = ALTERNATIVES[method.removesuffix("Stream")]
    message = f"tei.v1 {method} is not served by embedrpc: {reason}"

    async def refuse(_request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

    async def refuse_streaming(_request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
        yield

    return refuse_streaming if streaming else refuse


class TeiFront:
    def __init__(self, embedder: Embedder, metrics):
        self.embedder, self.metrics = embedder, metrics
        self.streams = OrderedStreams(metrics)
        for service in SERVICES:
            for method in service.methods:
                if method.name.removesuffix("Stream") in ALTERNATIVES:
                    setattr(self, method.name, _unimplemented(method.name,
                                                              method.server_streaming))

    def add_to(self, server) -> None:
        for service in SERVICES:
            add_service(server, service, self, tei)

    @unary("tei.Info")
    async def Info(self, request, context):
        info = self.embedder.info()
        return tei.InfoResponse(
            version=__version__, model_id=info.model, model_sha=info.revision or None,
            model_dtype=info.precision, model_type=tei.MODEL_TYPE_EMBEDDING,
            max_concurrent_requests=info.max_queue, max_input_length=info.max_input_tokens,
            max_batch_tokens=info.max_batch_tokens, max_client_batch_size=1,
            tokenization_workers=2)

    @unary("tei.Embed")
    async def Embed(self, request, context):
        return await self._embed(request)

    async def EmbedStream(self, request_iterator, context):
        async for response in self.streams.serve(
                request_iterator, context, "tei.EmbedStream",
                lambda request: self._embed(request, wait_for_room=True), lambda _: ""):
            yield response

    @unary("tei.Tokenize")
    async def Tokenize(self, request, context):
        return await self._tokenize(request)

    async def TokenizeStream(self, request_iterator, context):
        async for response in self.streams.serve(request_iterator, context,
                                                 "tei.TokenizeStream", self._tokenize,
                                                 lambda _: ""):
            yield response

    @unary("tei.Decode")
    async def Decode(self, request, context):
        return await self._decode(request)

    async def DecodeStream(self, request_iterator, context):
        async for response in self.streams.serve(request_iterator, context,
                                                 "tei.DecodeStream", self._decode,
                                                 lambda _: ""):
            yield response

    # -- conversions --------------------------------------------------------------------------
    async def _embed(self, request, wait_for_room: bool = False) -> tei.EmbedResponse:
        if request.truncation_direction not in TRUNCATIONS:
            raise invalid(f"truncation_direction {request.truncation_direction} is not a "
                          f"known TruncationDirection")
        options = EmbedOptions(
            prompt_name=request.prompt_name if request.HasField("prompt_name") else None,
            truncation=TRUNCATIONS[request.truncation_direction] if request.truncate
            else Truncation.NONE,
            dimensions=request.dimensions if request.HasField("dimensions") else None,
            normalize=request.normalize if request.HasField("normalize") else True)
        embedded = await self.embedder.embed([request.inputs], options, wait_for_room)
        return tei.EmbedResponse(embeddings=embedded.rows[0].tolist(),
                                 metadata=_metadata(request.inputs, embedded))

    async def _tokenize(self, request) -> tei.EncodeResponse:
        tokens = await self.embedder.describe_tokens(
            request.inputs, request.prompt_name if request.HasField("prompt_name") else None,
            request.add_special_tokens)
        return tei.EncodeResponse(tokens=[
            tei.SimpleToken(id=t.id, text=t.text, special=t.special, start=t.start, stop=t.stop)
            for t in tokens])

    async def _decode(self, request) -> tei.DecodeResponse:
        return tei.DecodeResponse(text=await self.embedder.decode(list(request.ids),
                                                                 request.skip_special_tokens))


def _metadata(text: str, embedded: Embedded) -> tei.Metadata:
    return tei.Metadata(compute_chars=len(text), compute_tokens=sum(embedded.token_counts),
                        total_time_ns=embedded.total_ns,
                        tokenization_time_ns=embedded.tokenize_ns)
