#!/usr/bin/env node
// Apollo Client sending the client preset's documents (preset-client.ts, compiled by tsc
// with tsconfig.persisted.json into build/) by their hash only: a server with
// GQL_MEDIA_TRUSTED_DOCUMENTS_STRICT runs nothing else.
//
//   node persisted.mjs --url http://127.0.0.1:8000/graphql [--prompt "a red fox"]
//
// Prints {"created": id, "requests": [the bodies it sent]}. Failures: stderr, exit 1.
import { parseArgs } from "node:util";
import { ApolloClient, HttpLink, InMemoryCache } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import { GenerateImage } from "./build/preset-client.js";

const { values: args } = parseArgs({
  options: { url: { type: "string" }, prompt: { type: "string", default: "a red fox" } },
});

const requests = [];
const recording = (input, init) => {
  requests.push(JSON.parse(init.body));
  return fetch(input, init);
};

const client = new ApolloClient({
  // the client preset put each document's id in its __meta__
  link: new PersistedQueryLink({ generateHash: (document) => document.__meta__.hash }).concat(
    new HttpLink({ uri: args.url, fetch: recording }),
  ),
  cache: new InMemoryCache(),
});

try {
  const { data } = await client.mutate({
    mutation: GenerateImage,
    variables: { input: { prompt: args.prompt } },
  });
  const payload = data.generateImage;
  if (!payload.job) throw new Error(JSON.stringify(payload.userErrors));
  process.stdout.write(`${JSON.stringify({ created: payload.job.id, requests })}\n`);
} catch (error) {
  process.stderr.write(`${error?.stack ?? error}\n`);
  process.exit(1);
}
