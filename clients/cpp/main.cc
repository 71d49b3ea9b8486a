// An embedrpc.v1 client in C++: calls Embed once and EmbedStream with one request per text, and
// prints the answers as JSON (ids, dimensions, vectors), then the status of a bad request.
//
//   embedrpc-client [--tls-ca FILE] [--api-key KEY] [--task query|document] HOST:PORT TEXT...
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "embedrpc/v1/embedding.grpc.pb.h"

namespace {

using embedrpc::v1::EmbeddingService;
using embedrpc::v1::EmbedRequest;
using embedrpc::v1::EmbedResponse;

[[noreturn]] void Fail(const std::string& message) {
  std::cerr << "embedrpc-client: " << message << "\n";
  std::exit(1);
}

std::string JsonString(const std::string& text) {
  std::ostringstream out;
  out << '"';
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out << '\\' << c;
    } else if (c < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
      out << escaped;
    } else {
      out << c;
    }
  }
  out << '"';
  return out.str();
}

std::string Answer(const EmbedResponse& response) {
  std::ostringstream out;
  out.precision(9);  // every float32 survives the round trip
  out << "{\"id\":" << JsonString(response.id()) << ",\"dimensions\":" << response.dimensions()
      << ",\"embeddings\":[";
  for (int i = 0; i < response.embeddings_size(); ++i) {
    out << (i ? "," : "") << "[";
    const auto& values = response.embeddings(i).values();
    for (int j = 0; j < values.size(); ++j) out << (j ? "," : "") << values.Get(j);
    out << "]";
  }
  out << "]}";
  return out.str();
}

void Authorize(grpc::ClientContext& context, const std::string& api_key) {
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  if (!api_key.empty()) context.AddMetadata("authorization", "Bearer " + api_key);
}

}  // namespace

int main(int argc, char** argv) {
  std::string ca_file, task_name = "query";
  const char* key_variable = std::getenv("EMBEDRPC_API_KEY");
  std::string api_key = key_variable ? key_variable : "";
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if ((arg == "--tls-ca" || arg == "--api-key" || arg == "--task") && i + 1 < argc) {
      (arg == "--tls-ca" ? ca_file : arg == "--api-key" ? api_key : task_name) = argv[++i];
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() < 2) Fail("usage: embedrpc-client [flags] HOST:PORT TEXT...");
  const std::string target = positional[0];
  const std::vector<std::string> texts(positional.begin() + 1, positional.end());
  const auto task = task_name == "document" ? embedrpc::v1::TASK_DOCUMENT
                                            : embedrpc::v1::TASK_QUERY;

  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!ca_file.empty()) {
    std::ifstream file(ca_file);
    if (!file) Fail("cannot read " + ca_file);
    std::stringstream pem;
    pem << file.rdbuf();
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = pem.str();
    credentials = grpc::SslCredentials(options);
  }
  auto stub = EmbeddingService::NewStub(grpc::CreateChannel(target, credentials));

  EmbedRequest request;
  request.set_id("cpp-unary");
  request.set_task(task);
  for (const auto& text : texts) request.add_inputs(text);
  EmbedResponse unary;
  grpc::ClientContext unary_context;
  Authorize(unary_context, api_key);
  grpc::Status status = stub->Embed(&unary_context, request, &unary);
  if (!status.ok()) Fail("Embed: " + status.error_message());

  grpc::ClientContext stream_context;
  Authorize(stream_context, api_key);
  auto stream = stub->EmbedStream(&stream_context);
  for (size_t i = 0; i < texts.size(); ++i) {
    EmbedRequest element;
    element.set_id("cpp-stream-" + std::to_string(i));
    element.set_task(task);
    element.add_inputs(texts[i]);
    if (!stream->Write(element)) Fail("EmbedStream: the server closed the stream");
  }
  stream->WritesDone();
  std::vector<std::string> streamed;
  for (EmbedResponse response; stream->Read(&response);) streamed.push_back(Answer(response));
  status = stream->Finish();
  if (!status.ok()) Fail("EmbedStream: " + status.error_message());

  EmbedResponse ignored;
  grpc::ClientContext invalid_context;
  Authorize(invalid_context, api_key);
  grpc::Status invalid = stub->Embed(&invalid_context, EmbedRequest(), &ignored);

  std::cout << "{\"unary\":" << Answer(unary) << ",\"stream\":[";
  for (size_t i = 0; i < streamed.size(); ++i) std::cout << (i ? "," : "") << streamed[i];
  std::cout << "],\"invalid_code\":" << static_cast<int>(invalid.error_code())
            << ",\"invalid_message\":" << JsonString(invalid.error_message()) << "}\n";
  return 0;
}
