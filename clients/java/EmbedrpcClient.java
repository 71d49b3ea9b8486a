// An embedrpc.v1 client in Java: calls Embed once and EmbedStream with one request per text,
// and prints the answers as JSON (ids, dimensions, vectors), then the status of a bad request.
//
//   embedrpc-client [--tls-ca FILE] [--api-key KEY] [--task query|document] HOST:PORT TEXT...
//
// Built by clients/java/build.sh from protos/ with Debian's grpc-java (libgrpc-java,
// protobuf-compiler-grpc-java-plugin): no Maven repository needed; nothing generated is
// committed.
package dev.embedrpc.client;

import com.google.gson.Gson;
import dev.embedrpc.v1.EmbedRequest;
import dev.embedrpc.v1.EmbedResponse;
import dev.embedrpc.v1.Embedding;
import dev.embedrpc.v1.EmbeddingServiceGrpc;
import dev.embedrpc.v1.Task;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.GrpcSslContexts;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.StreamObserver;
import java.io.File;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

public final class EmbedrpcClient {
  private static final long DEADLINE_SECONDS = 60;

  private static Map<String, Object> answer(EmbedResponse response) {
    List<List<Float>> vectors = new ArrayList<>();
    for (Embedding embedding : response.getEmbeddingsList()) {
      vectors.add(embedding.getValuesList());
    }
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("id", response.getId());
    out.put("dimensions", response.getDimensions());
    out.put("embeddings", vectors);
    return out;
  }

  private static void fail(String message) {
    System.err.println("embedrpc-client: " + message);
    System.exit(1);
  }

  public static void main(String[] args) throws Exception {
    String caFile = null;
    String apiKey = System.getenv("EMBEDRPC_API_KEY");
    Task task = Task.TASK_QUERY;
    List<String> positional = new ArrayList<>();
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--tls-ca" -> caFile = args[++i];
        case "--api-key" -> apiKey = args[++i];
        case "--task" -> task = args[++i].equals("document") ? Task.TASK_DOCUMENT : Task.TASK_QUERY;
        default -> positional.add(args[i]);
      }
    }
    if (positional.size() < 2) {
      fail("usage: embedrpc-client [--tls-ca FILE] [--api-key KEY] [--task query|document] "
          + "HOST:PORT TEXT...");
    }
    String target = positional.get(0);
    List<String> texts = positional.subList(1, positional.size());

    NettyChannelBuilder builder = NettyChannelBuilder.forTarget(target);
    if (caFile != null) {
      builder.sslContext(GrpcSslContexts.forClient().trustManager(new File(caFile)).build());
    } else {
      builder.usePlaintext();
    }
    ManagedChannel channel = builder.build();
    try {
      EmbeddingServiceGrpc.EmbeddingServiceBlockingStub blocking =
          EmbeddingServiceGrpc.newBlockingStub(channel);
      EmbeddingServiceGrpc.EmbeddingServiceStub async = EmbeddingServiceGrpc.newStub(channel);
      if (apiKey != null && !apiKey.isEmpty()) {
        Metadata headers = new Metadata();
        headers.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER),
            "Bearer " + apiKey);
        blocking = blocking.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));
        async = async.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));
      }
      Map<String, Object> out = new LinkedHashMap<>();
      EmbedResponse unary = blocking.withDeadlineAfter(DEADLINE_SECONDS, TimeUnit.SECONDS)
          .embed(EmbedRequest.newBuilder().setId("java-unary").addAllInputs(texts)
              .setTask(task).build());
      out.put("unary", answer(unary));

      List<Map<String, Object>> streamed = new ArrayList<>();
      Throwable[] streamError = new Throwable[1];
      CountDownLatch done = new CountDownLatch(1);
      StreamObserver<EmbedRequest> requests = async
          .withDeadlineAfter(DEADLINE_SECONDS, TimeUnit.SECONDS)
          .embedStream(new StreamObserver<EmbedResponse>() {
            @Override public void onNext(EmbedResponse response) {
              streamed.add(answer(response));
            }
            @Override public void onError(Throwable error) {
              streamError[0] = error;
              done.countDown();
            }
            @Override public void onCompleted() {
              done.countDown();
            }
          });
      for (int i = 0; i < texts.size(); i++) {
        requests.onNext(EmbedRequest.newBuilder().setId("java-stream-" + i)
            .addInputs(texts.get(i)).setTask(task).build());
      }
      requests.onCompleted();
      if (!done.await(DEADLINE_SECONDS, TimeUnit.SECONDS)) {
        fail("EmbedStream did not finish");
      }
      if (streamError[0] != null) {
        fail("EmbedStream: " + streamError[0]);
      }
      out.put("stream", streamed);

      try {
        blocking.withDeadlineAfter(DEADLINE_SECONDS, TimeUnit.SECONDS)
            .embed(EmbedRequest.newBuilder().build());
        fail("an empty request was answered");
      } catch (StatusRuntimeException error) {
        Status status = error.getStatus();
        out.put("invalid_code", status.getCode().value());
        out.put("invalid_message", status.getDescription());
      }
      System.out.println(new Gson().toJson(out));
    } finally {
      channel.shutdownNow().awaitTermination(10, TimeUnit.SECONDS);
    }
  }
}
