#!/usr/bin/env node
// Apollo Client against the api, as a frontend uses it: a normalised InMemoryCache,
// queries and mutations over HTTP, subscriptions over graphql-transport-ws (GraphQLWsLink)
// or over HTTP multipart (HttpLink alone), and `jobs` paged with relayStylePagination.
//
//   node apollo.mjs --url http://127.0.0.1:8000/graphql [--key gqlm_…] --job job_…
//                   [--transport ws|multipart] [--pages N]
//
// Prints one JSON line per jobUpdated result, then {"cached": …} (the job read back from
// the cache, with no request) and, with --pages, {"pages": [[ids of page 1], …],
// "merged": [ids the cache holds after fetchMore]}. Failures go to stderr, exit code 1.
import { parseArgs } from "node:util";
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { relayStylePagination } from "@apollo/client/utilities";
import { OperationTypeNode } from "graphql";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELED"]);

const FOLLOW = gql`
  subscription Follow($id: ID!) {
    jobUpdated(id: $id) { id status progress version outputs { id url contentType } }
  }
`;
const JOB = gql`
  query Job($id: ID!) {
    job(id: $id) { id status progress version outputs { id url contentType } }
  }
`;
const JOBS = gql`
  query Jobs($filter: JobFilter, $first: Int, $after: String) {
    jobs(filter: $filter, first: $first, after: $after) {
      pageInfo { hasNextPage endCursor }
      edges { cursor node { id status } }
    }
  }
`;

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    key: { type: "string" },
    job: { type: "string" },
    transport: { type: "string", default: "ws" },
    pages: { type: "string", default: "0" },
  },
});

function fail(message) {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

function print(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

function makeClient(url, key, transport) {
  const headers = key ? { authorization: `Bearer ${key}` } : {};
  const http = new HttpLink({ uri: url, headers });
  let link = http; // HttpLink sends subscriptions as multipart HTTP requests
  let ws = null;
  if (transport === "ws") {
    ws = createClient({
      url: url.replace(/^http/, "ws"),
      webSocketImpl: WebSocket,
      connectionParams: headers,
      retryAttempts: 0,
    });
    link = ApolloLink.split(
      ({ operationType }) => operationType === OperationTypeNode.SUBSCRIPTION,
      new GraphQLWsLink(ws),
      http,
    );
  }
  const cache = new InMemoryCache({
    typePolicies: {
      Query: {
        fields: {
          // one list per filter, whatever the page size and cursor
          jobs: relayStylePagination(["filter"]),
          // job(id:) is answered from the cache when the Job is there
          job: { read: (_, { args, toReference }) => toReference({ __typename: "Job", id: args.id }) },
        },
      },
    },
  });
  return { client: new ApolloClient({ link, cache }), dispose: () => ws?.dispose() };
}

function follow(client, id) {
  let last = null;
  return new Promise((resolve, reject) => {
    client.subscribe({ query: FOLLOW, variables: { id } }).subscribe({
      next({ data, error }) {
        if (error) return reject(error);
        last = data.jobUpdated;
        print(last);
      },
      error: reject,
      complete() {
        if (last && TERMINAL.has(last.status)) resolve(last);
        else reject(new Error(`completed before a terminal status (last: ${last?.status})`));
      },
    });
  });
}

async function page(client, size, count) {
  const watched = client.watchQuery({ query: JOBS, variables: { first: size } });
  let { data } = await watched.refetch();
  const pages = [data.jobs.edges.map((edge) => edge.node.id)];
  while (pages.length < count && data.jobs.pageInfo.hasNextPage) {
    const more = await watched.fetchMore({ variables: { after: data.jobs.pageInfo.endCursor } });
    pages.push(more.data.jobs.edges.map((edge) => edge.node.id));
    data = client.readQuery({ query: JOBS, variables: { first: size } });
  }
  return { pages, merged: data.jobs.edges.map((edge) => edge.node.id) };
}

if (!args.url || !args.job || !["ws", "multipart"].includes(args.transport)) {
  fail("usage: apollo.mjs --url HTTP_URL [--key KEY] --job ID [--transport ws|multipart]");
}
const { client, dispose } = makeClient(args.url, args.key, args.transport);
try {
  await follow(client, args.job);
  // the subscription's results were normalised into the cache: no request is made here
  const { data } = await client.query({
    query: JOB,
    variables: { id: args.job },
    fetchPolicy: "cache-only",
  });
  print({ cached: data.job });
  const pages = Number(args.pages);
  if (pages > 0) print(await page(client, 1, pages));
} catch (error) {
  fail(String(error?.stack ?? error));
} finally {
  dispose();
}
