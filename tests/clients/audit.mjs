#!/usr/bin/env node
// Run the GraphQL over HTTP audits of graphql-http against a server, printing every
// result that is not "ok" as a JSON line ({id, name, status, reason}) and a summary to
// stderr; exits 0 when none is an error.
//
//   node audit.mjs --url http://127.0.0.1:8000/graphql [--key gqlm_…]
import { parseArgs } from "node:util";
import { auditServer } from "graphql-http";

const { values: args } = parseArgs({
  options: { url: { type: "string" }, key: { type: "string" } },
});
if (!args.url) {
  process.stderr.write("usage: audit.mjs --url HTTP_URL [--key KEY]\n");
  process.exit(1);
}

// every audit's request carries the key when one is given
const fetchFn = args.key
  ? (input, init = {}) => {
      const headers = new Headers(init.headers);
      headers.set("authorization", `Bearer ${args.key}`);
      return fetch(input, { ...init, headers });
    }
  : fetch;

const results = await auditServer({ url: args.url, fetchFn });
let errors = 0;
for (const result of results) {
  if (result.status === "ok") continue;
  if (result.status === "error") errors += 1;
  const { id, name, status, reason } = result;
  process.stdout.write(`${JSON.stringify({ id, name, status, reason })}\n`);
}
process.stderr.write(`${results.length} audits, ${errors} errors\n`);
process.exit(errors ? 1 : 0);
