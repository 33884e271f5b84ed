#!/usr/bin/env node
// Follow one job over the graphql-sse protocol (distinct connections mode) with the
// graphql-sse client, printing every update as a JSON line; exits 0 once the stream
// completes after SUCCEEDED, FAILED or CANCELED.
//
//   node sse.mjs --url http://127.0.0.1:8000/graphql [--key gqlm_…] --job job_…
//
// Failures go to stderr with exit code 1: GraphQL errors as "errors: [...]", a refused
// request as "HTTP <status>: <body>".
import { parseArgs } from "node:util";
import { createClient } from "graphql-sse";
import { operation } from "./operations.mjs";

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELED"]);

const { values: args } = parseArgs({
  options: { url: { type: "string" }, key: { type: "string" }, job: { type: "string" } },
});

function fail(message) {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

async function describe(error) {
  if (Array.isArray(error)) return `errors: ${JSON.stringify(error)}`;
  if (error instanceof Response) return `HTTP ${error.status}: ${await error.text()}`;
  return String(error?.stack ?? error);
}

if (!args.url || !args.job) fail("usage: sse.mjs --url HTTP_URL [--key KEY] --job ID");

const client = createClient({
  url: args.url,
  headers: args.key ? { authorization: `Bearer ${args.key}` } : {},
  // a refused request would otherwise be retried with backoff
  retryAttempts: 0,
});
let last = null;
try {
  await new Promise((resolve, reject) => {
    client.subscribe(
      { query: operation("JobUpdated"), variables: { id: args.job } },
      {
        next(result) {
          if (result.errors) return reject(result.errors);
          last = result.data.jobUpdated;
          process.stdout.write(`${JSON.stringify(last)}\n`);
        },
        error: reject,
        complete() {
          if (last && TERMINAL.has(last.status)) resolve();
          else reject(new Error(`completed before a terminal status (last: ${last?.status})`));
        },
      },
    );
  });
} catch (error) {
  fail(await describe(error));
} finally {
  client.dispose();
}
