// An embedrpc.v1 client in Go: calls Embed once and EmbedStream with one request per text,
// and prints the answers as JSON (ids, dimensions, vectors), then the status of a bad request.
//
//	embedrpc-client [-tls-ca FILE] [-api-key KEY] [-task query|document] HOST:PORT TEXT...
//
// Stubs are generated at build time from protos/ (clients/go/build.sh); nothing generated is
// committed.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	pb "github.com/embedrpc/embedrpc/gen/go/embedrpc/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// protoCodec marshals with google.golang.org/protobuf. Debian bookworm's grpc-go (1.33) would
// use github.com/golang/protobuf 1.3.5, which predates the messages protoc-gen-go 1.28 makes.
type protoCodec struct{}

func (protoCodec) Marshal(v interface{}) ([]byte, error) { return proto.Marshal(v.(proto.Message)) }
func (protoCodec) Unmarshal(data []byte, v interface{}) error {
	return proto.Unmarshal(data, v.(proto.Message))
}
func (protoCodec) Name() string { return "proto" }

type answer struct {
	ID         string      `json:"id"`
	Dimensions uint32      `json:"dimensions"`
	Embeddings [][]float32 `json:"embeddings"`
}

type report struct {
	Unary          answer   `json:"unary"`
	Stream         []answer `json:"stream"`
	InvalidCode    int      `json:"invalid_code"`
	InvalidMessage string   `json:"invalid_message"`
}

func toAnswer(response *pb.EmbedResponse) answer {
	out := answer{ID: response.GetId(), Dimensions: response.GetDimensions()}
	for _, embedding := range response.GetEmbeddings() {
		out.Embeddings = append(out.Embeddings, embedding.GetValues())
	}
	return out
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "embedrpc-client: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	caFile := flag.String("tls-ca", "", "PEM CA of the server's certificate (TLS)")
	apiKey := flag.String("api-key", os.Getenv("EMBEDRPC_API_KEY"), "API key")
	taskName := flag.String("task", "query", "query or document")
	flag.Parse()
	if flag.NArg() < 2 {
		fail("usage: embedrpc-client [flags] HOST:PORT TEXT...")
	}
	target, texts := flag.Arg(0), flag.Args()[1:]
	task := map[string]pb.Task{"query": pb.Task_TASK_QUERY, "document": pb.Task_TASK_DOCUMENT}[*taskName]

	transport := grpc.WithInsecure() // grpc-go 1.33 (Debian bookworm) predates credentials/insecure
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fail("%v", err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		transport = grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool}))
	}
	connection, err := grpc.Dial(target, transport,
		grpc.WithDefaultCallOptions(grpc.ForceCodec(protoCodec{})))
	if err != nil {
		fail("dial %s: %v", target, err)
	}
	defer connection.Close()
	client := pb.NewEmbeddingServiceClient(connection)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if *apiKey != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*apiKey)
	}

	var out report
	unary, err := client.Embed(ctx, &pb.EmbedRequest{Id: "go-unary", Inputs: texts, Task: task})
	if err != nil {
		fail("Embed: %v", err)
	}
	out.Unary = toAnswer(unary)

	stream, err := client.EmbedStream(ctx)
	if err != nil {
		fail("EmbedStream: %v", err)
	}
	for i, text := range texts {
		request := &pb.EmbedRequest{Id: fmt.Sprintf("go-stream-%d", i), Inputs: []string{text}, Task: task}
		if err := stream.Send(request); err != nil {
			fail("EmbedStream send: %v", err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		fail("EmbedStream close: %v", err)
	}
	for {
		response, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			fail("EmbedStream receive: %v", err)
		}
		out.Stream = append(out.Stream, toAnswer(response))
	}

	_, err = client.Embed(ctx, &pb.EmbedRequest{Inputs: []string{}})
	out.InvalidCode = int(status.Code(err))
	out.InvalidMessage = status.Convert(err).Message()

	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("%v", err)
	}
}
