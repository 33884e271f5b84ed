// A small client written against the generated types; `tsc --noEmit` checks it, so a
// schema or operation change that breaks callers fails tests/test_clients.py.
import { type Client, createClient } from "graphql-ws";
import type {
  ErrorCode,
  GenerateImageMutation,
  GenerateImageMutationVariables,
  JobStatus,
  JobUpdatedSubscription,
  JobUpdatedSubscriptionVariables,
  JobQuery,
  JobsQuery,
  JobsQueryVariables,
  NodesQuery,
  ProcessImageMutationVariables,
  ProvidersQuery,
} from "./generated/graphql.js";

type Response<TResult> = { data?: TResult | null; errors?: { message: string }[] };

/** POST one operation; the result and variables are typed by the generated types. */
export async function request<TResult, TVariables>(
  url: string,
  key: string | undefined,
  query: string,
  variables: TVariables,
): Promise<TResult> {
  const response = await fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(key ? { authorization: `Bearer ${key}` } : {}),
    },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await response.json()) as Response<TResult>;
  if (!body.data || body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

export async function generate(url: string, query: string): Promise<string> {
  const variables: GenerateImageMutationVariables = {
    input: { prompt: "a lighthouse at dusk", width: 768, height: 512, outputFormat: "WEBP" },
  };
  const data = await request<GenerateImageMutation, GenerateImageMutationVariables>(
    url,
    undefined,
    query,
    variables,
  );
  const { job, userErrors } = data.generateImage;
  if (!job) throw new Error(userErrors.map((e) => `${e.field}: ${e.code}`).join(", "));
  const status: JobStatus = job.status;
  return `${job.id} ${status} ${job.createdAt.slice(0, 10)}`;
}

/** Every page of succeeded jobs, following endCursor. */
export async function succeededJobIds(url: string, query: string): Promise<string[]> {
  const ids: string[] = [];
  let after: string | null = null;
  for (;;) {
    const variables: JobsQueryVariables = { filter: { status: ["SUCCEEDED"] }, first: 20, after };
    const { jobs }: JobsQuery = await request<JobsQuery, JobsQueryVariables>(
      url,
      undefined,
      query,
      variables,
    );
    ids.push(...jobs.edges.map((edge) => edge.node.id));
    if (!jobs.pageInfo.hasNextPage) return ids;
    after = jobs.pageInfo.endCursor;
  }
}

export function defaultModels(data: ProvidersQuery): string[] {
  return data.providers.filter((p) => p.isDefault).map((p) => p.defaultModel);
}

export function follow(
  url: string,
  key: string,
  query: string,
  id: string,
  onUpdate: (job: JobUpdatedSubscription["jobUpdated"]) => void,
): Client {
  const client = createClient({ url, connectionParams: { authorization: `Bearer ${key}` } });
  const variables: JobUpdatedSubscriptionVariables = { id };
  client.subscribe<JobUpdatedSubscription>(
    { query, variables },
    {
      next: ({ data }) => {
        if (data) onUpdate(data.jobUpdated);
      },
      error: (error) => console.error(error),
      complete: () => client.dispose(),
    },
  );
  return client;
}

export const thumbnails: ProcessImageMutationVariables = {
  input: {
    mediaId: "med_0",
    variants: [
      { name: "thumb", format: "WEBP", quality: 80, operations: [{ thumbnail: { size: 256 } }] },
    ],
  },
};

/** What a job was asked, in words: its parameters are typed by the job's kind. */
export function describeParameters(job: NonNullable<JobQuery["job"]>): string {
  const asked = job.parameters;
  switch (asked.__typename) {
    case "GenerateImageParameters":
      return `${asked.width}x${asked.height} ${asked.outputFormat} seed ${asked.seed}`;
    case "ProcessImageParameters":
      return asked.variants.map((variant) => variant.name).join(", ");
    case "ProcessVideoParameters":
      return asked.operations.map((entry) => entry.name ?? "unnamed").join(", ");
  }
}

/** The duration of a video output or of videoMetadata's findings, when known. */
export function duration(job: NonNullable<JobQuery["job"]>): number | null {
  const output = job.outputs.find((asset) => asset.metadata?.__typename === "AudioVideoMetadata");
  if (output?.metadata?.__typename === "AudioVideoMetadata") return output.metadata.duration ?? null;
  return job.result?.duration ?? null;
}

/** The ids of the jobs among what nodes(ids:) found. */
export function jobIds(data: NodesQuery): string[] {
  return data.nodes.flatMap((node) => (node?.__typename === "Job" ? [node.id] : []));
}

export const retryLater: ErrorCode[] = ["RATE_LIMITED", "TOO_MANY_ACTIVE_JOBS"];

// The types are real: each of these is an error that tsc must report.
// @ts-expect-error "SLOW_DOWN" is not an ErrorCode
export const unknownCode: ErrorCode = "SLOW_DOWN";
export function unnarrowed(job: NonNullable<JobQuery["job"]>): unknown {
  // @ts-expect-error only a generation's parameters have a seed: narrow by __typename first
  return job.parameters.seed;
}
// @ts-expect-error "DONE" is not a JobStatus
export const misspelledStatus: JobStatus = "DONE";
// @ts-expect-error prompt is required
export const noPrompt: GenerateImageMutationVariables = { input: { width: 64, height: 64 } };
export function missingField(data: GenerateImageMutation): unknown {
  // @ts-expect-error the operation does not select `seed`
  return data.generateImage.job?.seed;
}
