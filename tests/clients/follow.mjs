#!/usr/bin/env node
// Follow one job over graphql-transport-ws with the graphql-ws client, printing every
// update as a JSON line; exits 0 once the job reaches SUCCEEDED, FAILED or CANCELED.
//
//   node follow.mjs --url ws://127.0.0.1:8000/graphql [--key gqlm_…] --job job_…
//   node follow.mjs --url ws://127.0.0.1:8000/graphql [--key gqlm_…] --generate '{"prompt": "…"}'
//
// --generate submits the job first (generateImage over HTTP, with fetch). Failures go to
// stderr with exit code 1; a socket the server closed is reported as "close code N: reason".
import { parseArgs } from "node:util";
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import { operation } from "./operations.mjs";

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELED"]);

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    key: { type: "string" },
    job: { type: "string" },
    generate: { type: "string" },
  },
});

function fail(message) {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

function describe(error) {
  if (error && typeof error === "object" && "code" in error && "reason" in error) {
    return `close code ${error.code}: ${error.reason}`;
  }
  if (Array.isArray(error)) return `errors: ${JSON.stringify(error)}`;
  return String(error?.stack ?? error);
}

async function generate(url, key, input) {
  const response = await fetch(url.replace(/^ws/, "http"), {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(key ? { authorization: `Bearer ${key}` } : {}),
    },
    body: JSON.stringify({ query: operation("GenerateImage"), variables: { input } }),
  });
  const body = await response.json();
  const payload = body.data?.generateImage;
  if (!response.ok || body.errors || !payload?.job || payload.userErrors.length > 0) {
    fail(`generateImage failed (HTTP ${response.status}): ${JSON.stringify(body)}`);
  }
  return payload.job.id;
}

function follow(url, key, id) {
  const client = createClient({
    url,
    webSocketImpl: WebSocket,
    connectionParams: key ? { authorization: `Bearer ${key}` } : {},
    // A refused key (4403) would otherwise be retried with backoff.
    retryAttempts: 0,
  });
  let last = null;
  return new Promise((resolve, reject) => {
    client.subscribe(
      { query: operation("JobUpdated"), variables: { id } },
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
  }).finally(() => client.dispose());
}

if (!args.url || Boolean(args.job) === Boolean(args.generate)) {
  fail("usage: follow.mjs --url WS_URL [--key KEY] (--job ID | --generate INPUT_JSON)");
}
try {
  const id = args.job ?? (await generate(args.url, args.key, JSON.parse(args.generate)));
  await follow(args.url, args.key, id);
} catch (error) {
  fail(describe(error));
}
