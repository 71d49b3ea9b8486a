// The official OpenAI Node SDK against embedrpc's HTTP front (tests/test_http_clients.py).
// Usage: node openai_client.mjs BASE_URL MODEL TEXT...
// Prints JSON: the default call's vectors (the SDK asks for base64 and decodes it), the
// float call's, a query-prompt call's (input_type as an extra body field), a Matryoshka
// call's, and the error an unknown model gets.
import OpenAI from "openai";

const [baseURL, model, ...texts] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: process.env.EMBEDRPC_API_KEY || "unused", maxRetries: 0 });

const vectors = (response) => response.data.map((item) => item.embedding);
const byDefault = await client.embeddings.create({ model, input: texts });
const asFloat = await client.embeddings.create({ model, input: texts, encoding_format: "float" });
const query = await client.embeddings.create({ model, input: texts, input_type: "query" });
const short = await client.embeddings.create({ model, input: texts, dimensions: 32 });
let error = null;
try {
  await client.embeddings.create({ model: "no-such-model", input: texts });
} catch (caught) {
  error = { status: caught.status, code: caught.code, type: caught.type, param: caught.param };
}
console.log(JSON.stringify({
  default: vectors(byDefault), float: vectors(asFloat), query: vectors(query),
  short: vectors(short), usage: byDefault.usage, model: byDefault.model, error,
}));
