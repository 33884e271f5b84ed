// Every GraphQL document the dashboard sends, in one place.

// what a card shows of a job's parameters: size and count, or the names of its outputs
// and operations (an operation's field is set, the others null)
const JOB_CARD = `
fragment JobCard on Job {
  id kind status progress version prompt provider model attempts maxAttempts
  parameters {
    ... on GenerateImageParameters { width height numOutputs }
    ... on ProcessImageParameters { variants { name } }
    ... on ProcessVideoParameters {
      operations {
        name videoThumbnail { __typename } videoMetadata transcode { __typename }
        extractAudio { __typename }
      }
    }
  }
  createdAt
  error { code message retryable }
  outputs { id url name width height contentType byteSize }
}`;

// every field of a job's parameters, for its detail
const PARAMETERS = `
fragment Parameters on JobParameters {
  ... on GenerateImageParameters {
    negativePrompt width height numOutputs seed outputFormat extra
  }
  ... on ProcessImageParameters {
    mediaId
    variants {
      name format quality progressive stripMetadata
      operations {
        resize { width height fit upscale } thumbnail { size } crop { left top width height }
        rotate { degrees expand background } autoOrient
        textWatermark { text position margin opacity scale color }
        imageWatermark { mediaId position margin opacity scale }
      }
    }
  }
  ... on ProcessVideoParameters {
    mediaId
    operations {
      name videoThumbnail { at fraction maxSize format } videoMetadata
      transcode { targetHeight quality } extractAudio { codec bitrate }
    }
  }
}`;

const METADATA = `
fragment Metadata on MediaMetadata {
  ... on ImageMetadata { kind format frames }
  ... on AudioVideoMetadata { ...AudioVideo }
}
fragment AudioVideo on AudioVideoMetadata {
  kind container duration width height fps videoCodec audioCodec bitrate rotation sampleRate channels
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
    id kind status version provider model attempts maxAttempts
    parameters { ...Parameters }
    result { ...AudioVideo }
    createdAt startedAt finishedAt updatedAt webhookUrl
    error { code message retryable }
    outputs { id url name contentType width height byteSize sha256 metadata { ...Metadata } }
    webhookDeliveries { webhookId event attempt url statusCode error durationMs succeeded at }
  }
}${PARAMETERS}${METADATA}`;

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
