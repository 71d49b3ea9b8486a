// A Node client of embedrpc.v1: calls Embed and EmbedStream and checks the vectors against
// the expectations written by tests/test_node_client.py. Exits non-zero on any mismatch.
//   node client.mjs HOST:PORT PROTO_ROOT EXPECTED_JSON
// TLS and API keys from the environment, as a deployment would pass them:
//   EMBEDRPC_TLS_CA (the server's CA), EMBEDRPC_TLS_CERT + EMBEDRPC_TLS_KEY (mTLS),
//   EMBEDRPC_API_KEY (sent as 'authorization: Bearer <key>').
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const [target, protoRoot, expectedPath] = process.argv.slice(2);
const expected = JSON.parse(readFileSync(expectedPath, 'utf8'));
const definition = protoLoader.loadSync('embedrpc/v1/embedding.proto', {
  includeDirs: [protoRoot], keepCase: true, enums: String, defaults: true,
});
const { EmbeddingService } = grpc.loadPackageDefinition(definition).embedrpc.v1;
const env = process.env;
const read = (path) => (path ? readFileSync(path) : null);
const credentials = env.EMBEDRPC_TLS_CA
  ? grpc.credentials.createSsl(read(env.EMBEDRPC_TLS_CA), read(env.EMBEDRPC_TLS_KEY),
    read(env.EMBEDRPC_TLS_CERT))
  : grpc.credentials.createInsecure();
const client = new EmbeddingService(target, credentials);
const metadata = new grpc.Metadata();
if (env.EMBEDRPC_API_KEY) metadata.set('authorization', `Bearer ${env.EMBEDRPC_API_KEY}`);

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / Math.sqrt(na * nb);
}

function checkVectors(response, label) {
  assert.equal(response.embeddings.length, expected.vectors.length, `${label}: count`);
  assert.equal(response.dimensions, expected.vectors[0].length, `${label}: dimensions`);
  response.embeddings.forEach((embedding, i) => {
    const similarity = cosine(embedding.values, expected.vectors[i]);
    assert.ok(similarity >= expected.bar, `${label}: input ${i} cosine ${similarity} < ${expected.bar}`);
  });
}

const request = (id) => ({ id, inputs: expected.texts, task: 'TASK_QUERY' });
const deadline = () => ({ deadline: Date.now() + 60_000 });

const unary = await new Promise((resolve, reject) =>
  client.Embed(request('node-unary'), metadata, deadline(), (error, response) => (error ? reject(error) : resolve(response))));
assert.equal(unary.id, 'node-unary');
assert.equal(unary.encoding, 'ENCODING_FLOAT32');
checkVectors(unary, 'Embed');

const ids = Array.from({ length: 20 }, (_, i) => `node-stream-${i}`);
const streamed = await new Promise((resolve, reject) => {
  const responses = [];
  const call = client.EmbedStream(metadata, deadline());
  call.on('data', (response) => responses.push(response));
  call.on('error', reject);
  call.on('end', () => resolve(responses));
  ids.forEach((id) => call.write(request(id)));
  call.end();
});
assert.deepEqual(streamed.map((r) => r.id), ids);
streamed.forEach((response) => checkVectors(response, `EmbedStream ${response.id}`));

const invalid = await new Promise((resolve) =>
  client.Embed({ inputs: [] }, metadata, deadline(), (error) => resolve(error)));
assert.equal(invalid.code, grpc.status.INVALID_ARGUMENT);

console.log(`node client: ok (${ids.length + 1} responses checked)`);
client.close();
