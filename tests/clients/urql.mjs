#!/usr/bin/env node
// urql (@urql/core) against the api: generateImage over HTTP (fetchExchange), then
// jobUpdated over graphql-transport-ws (subscriptionExchange with graphql-ws), then the
// job read back with a query.
//
//   node urql.mjs --url http://127.0.0.1:8000/graphql [--key gqlm_…] (--job job_… | --prompt TEXT)
//
// Prints {"created": id} when it submitted the job, one JSON line per jobUpdated result,
// then {"job": …}. Failures go to stderr, exit code 1.
import { parseArgs } from "node:util";
import { Client, fetchExchange, gql, subscriptionExchange } from "@urql/core";
import { createClient as createWsClient } from "graphql-ws";
import WebSocket from "ws";

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELED"]);

const GENERATE = gql`
  mutation Generate($input: GenerateImageInput!) {
    generateImage(input: $input) { job { id status } userErrors { field code message } }
  }
`;
const FOLLOW = gql`
  subscription Follow($id: ID!) {
    jobUpdated(id: $id) { id status progress version outputs { url contentType } }
  }
`;
const JOB = gql`
  query Job($id: ID!) {
    job(id: $id) { id status version outputs { url contentType } }
  }
`;

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    key: { type: "string" },
    job: { type: "string" },
    prompt: { type: "string" },
  },
});

function fail(message) {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

function print(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

function makeClient(url, key) {
  const headers = key ? { authorization: `Bearer ${key}` } : {};
  const ws = createWsClient({
    url: url.replace(/^http/, "ws"),
    webSocketImpl: WebSocket,
    connectionParams: headers,
    retryAttempts: 0,
  });
  const client = new Client({
    url,
    fetchOptions: { headers },
    exchanges: [
      fetchExchange,
      subscriptionExchange({
        forwardSubscription: (request) => ({
          subscribe: (sink) => ({ unsubscribe: ws.subscribe({ ...request, query: request.query ?? "" }, sink) }),
        }),
      }),
    ],
  });
  return { client, dispose: () => ws.dispose() };
}

async function generate(client, prompt) {
  const result = await client.mutation(GENERATE, { input: { prompt } }).toPromise();
  if (result.error) throw result.error;
  const payload = result.data.generateImage;
  if (payload.userErrors.length > 0) throw new Error(JSON.stringify(payload.userErrors));
  return payload.job.id;
}

function follow(client, id) {
  let last = null;
  return new Promise((resolve, reject) => {
    const { unsubscribe } = client.subscription(FOLLOW, { id }).subscribe((result) => {
      if (result.error) return reject(result.error);
      last = result.data.jobUpdated;
      print(last);
      if (TERMINAL.has(last.status)) {
        unsubscribe();
        resolve(last);
      }
    });
  });
}

if (!args.url || Boolean(args.job) === Boolean(args.prompt)) {
  fail("usage: urql.mjs --url HTTP_URL [--key KEY] (--job ID | --prompt TEXT)");
}
const { client, dispose } = makeClient(args.url, args.key);
try {
  let id = args.job;
  if (!id) {
    id = await generate(client, args.prompt);
    print({ created: id });
  }
  await follow(client, id);
  const result = await client.query(JOB, { id }, { requestPolicy: "network-only" }).toPromise();
  if (result.error) throw result.error;
  print({ job: result.data.job });
} catch (error) {
  // urql's CombinedError carries the server's error codes in graphQLErrors
  const codes = (error?.graphQLErrors ?? []).map((e) => e.extensions?.code);
  fail(`${codes.join(", ")} ${error?.stack ?? error}`.trim());
} finally {
  dispose();
}
