// A client written with GraphQL Code Generator's client preset: the graphql() calls below
// become typed documents (generated/client/), which Apollo Client checks against. `tsc
// --noEmit` compiles it, so a schema change that breaks these callers fails
// tests/test_clients.py; the @ts-expect-error lines fail the check unless the types really
// reject those mistakes.
import type { ApolloClient } from "@apollo/client";
import { graphql } from "./generated/client/index.js";

export const GenerateImage = graphql(`
  mutation PresetGenerateImage($input: GenerateImageInput!) {
    generateImage(input: $input) {
      job { id status }
      userErrors { field code message }
    }
  }
`);

export const FollowJob = graphql(`
  subscription PresetFollowJob($id: ID!) {
    jobUpdated(id: $id) { id status progress outputs { url contentType width height } }
  }
`);

/** Submit a prompt; the result's shape comes from the document, not from a cast. */
export async function submit(client: ApolloClient, prompt: string): Promise<string> {
  const { data } = await client.mutate({ mutation: GenerateImage, variables: { input: { prompt } } });
  const payload = data?.generateImage;
  if (!payload?.job) throw new Error(payload?.userErrors.map((e) => e.code).join(", "));
  const status: "QUEUED" | "RUNNING" | "SUCCEEDED" | "FAILED" | "CANCELED" = payload.job.status;
  void status;
  return payload.job.id;
}

/** The URLs of a finished job's images, as each update arrives. */
export function follow(client: ApolloClient, id: string, onUrls: (urls: string[]) => void): void {
  client.subscribe({ query: FollowJob, variables: { id } }).subscribe(({ data }) => {
    const job = data?.jobUpdated;
    if (job?.status === "SUCCEEDED") onUrls(job.outputs.map((output) => output.url));
  });
}

export async function mistakes(client: ApolloClient): Promise<void> {
  // @ts-expect-error width is an Int, not a string
  await client.mutate({ mutation: GenerateImage, variables: { input: { prompt: "a", width: "64" } } });
  // @ts-expect-error the input needs a prompt
  await client.mutate({ mutation: GenerateImage, variables: { input: { width: 64 } } });
  const { data } = await client.mutate({ mutation: GenerateImage, variables: { input: { prompt: "a" } } });
  // @ts-expect-error the document does not select the job's prompt
  void data?.generateImage.job?.prompt;
}
