// Every GraphQL document the dashboard sends, in one place.

const JOB_CARD = `
fragment JobCard on Job {
  id kind status progress version prompt provider model parameters attempts maxAttempts
  createdAt
  error { code message retryable }
  outputs { id url name width height contentType byteSize }
}`;

const PAYLOAD = "job { ...JobCard } userErrors { field code message }";

export const JOBS = `query Jobs($filter: JobFilter, $first: Int, $after: String) {
  jobs(filter: $filter, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { ...JobCard } }
  }
}${JOB_CARD}`;

export const JOB_COUNT = `query JobCount($filter: JobFilter) {
  jobs(filter: $filter, first: 0) { totalCount }
}`;

export const JOB_EVENTS = `subscription JobEvents($filter: JobFilter) {
  jobEvents(filter: $filter) { ...JobCard }
}${JOB_CARD}`;

export const JOB_DETAIL = `query JobDetail($id: ID!) {
  job(id: $id) {
    id kind status version provider model parameters attempts maxAttempts result
    createdAt startedAt finishedAt updatedAt webhookUrl
    error { code message retryable }
    outputs { id url name contentType width height byteSize sha256 metadata }
    webhookDeliveries { webhookId event attempt url statusCode error durationMs succeeded at }
  }
}`;

export const PROVIDERS = `query Providers {
  providers { name configured isDefault defaultModel models { name description maxOutputs sizes } }
}`;

export const GENERATE = `mutation Generate($input: GenerateImageInput!) {
  generateImage(input: $input) { ${PAYLOAD} }
}${JOB_CARD}`;

export const PROCESS_IMAGE = `mutation ProcessImage($input: ProcessImageInput!) {
  processImage(input: $input) { ${PAYLOAD} }
}${JOB_CARD}`;

export const PROCESS_VIDEO = `mutation ProcessVideo($input: ProcessVideoInput!) {
  processVideo(input: $input) { ${PAYLOAD} }
}${JOB_CARD}`;

/** cancelJob or retryJob: the card's buttons name the action. */
export const jobAction = (field) => `mutation Act($id: ID!) {
  ${field}(id: $id) { ${PAYLOAD} }
}${JOB_CARD}`;
