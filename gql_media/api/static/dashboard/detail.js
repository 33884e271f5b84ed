// A job's detail, read with the job query when its card's "Details" opens (and again when
// the job changes while open): attempts, parameters, timestamps, error, outputs with their
// metadata, and every webhook delivery.

import { graphql } from "./api.js";
import { formatBytes, formatSize, formatTime, h, safeUrl } from "./dom.js";
import { JOB_DETAIL } from "./queries.js";

const asked = new WeakMap(); // card → the newest request, so older answers are dropped

function json(value) {
  return h("pre", { class: "json", text: JSON.stringify(value, null, 2) });
}

/** The fields that have a value, at every depth (a typed answer names every field). */
function known(value) {
  if (Array.isArray(value)) return value.map(known);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(Object.entries(value)
    .filter(([, field]) => field !== null).map(([key, field]) => [key, known(field)]));
}

function facts(rows) {
  return h("dl", { class: "facts" }, ...rows.flatMap(([term, value]) => [
    h("dt", { text: term }),
    h("dd", {}, value instanceof Node ? value : String(value ?? "—")),
  ]));
}

function table(caption, headings, rows) {
  return h("table", { class: "detail-table" },
    h("caption", { class: "visually-hidden", text: caption }),
    h("thead", {}, h("tr", {}, ...headings.map((text) => h("th", { scope: "col", text })))),
    h("tbody", {}, ...rows.map((cells) => h("tr", {}, ...cells.map((cell) =>
      h("td", {}, cell instanceof Node ? cell : String(cell ?? "—")))))));
}

function outputsTable(job) {
  if (!job.outputs.length) return h("p", { class: "muted", text: "No outputs." });
  return table("Outputs", ["Name", "Type", "Size", "Bytes", "Metadata"], job.outputs.map((asset, index) => {
    const url = safeUrl(asset.url);
    const name = asset.name ?? `output ${index + 1}`;
    return [
      url ? h("a", { href: url, target: "_blank", rel: "noopener", text: name }) : name,
      asset.contentType,
      formatSize(asset) || "—",
      h("span", { title: `${asset.byteSize} bytes` }, formatBytes(asset.byteSize)),
      asset.metadata ? json(known(asset.metadata)) : "—",
    ];
  }));
}

function deliveriesTable(job) {
  if (!job.webhookUrl) return h("p", { class: "muted", text: "No webhook for this job." });
  if (!job.webhookDeliveries.length) return h("p", { class: "muted", text: "No webhook deliveries yet." });
  return table("Webhook deliveries", ["At", "Event", "Attempt", "Status", "Duration", "Result"],
    job.webhookDeliveries.map((delivery) => [
      formatTime(delivery.at),
      delivery.event,
      delivery.attempt,
      delivery.statusCode ?? "—",
      `${Math.round(delivery.durationMs)} ms`,
      delivery.succeeded ? "delivered" : `failed${delivery.error ? `: ${delivery.error}` : ""}`,
    ]));
}

function render(job) {
  const rows = [
    ["Job ID", h("code", { text: job.id })],
    ["Kind", job.kind],
    ["Provider", job.model ? `${job.provider} (${job.model})` : job.provider],
    ["Status", job.status],
    ["Attempts", `${job.attempts} of ${job.maxAttempts}`],
    ["Created", formatTime(job.createdAt)],
    ["Started", formatTime(job.startedAt)],
    ["Finished", formatTime(job.finishedAt)],
    ["Updated", formatTime(job.updatedAt)],
  ];
  if (job.webhookUrl) rows.push(["Webhook", job.webhookUrl]);
  if (job.error) {
    rows.push(["Error code", h("code", { class: "error-code", text: job.error.code })]);
    rows.push(["Error message", job.error.message]);
    rows.push(["Retryable", job.error.retryable ? "yes" : "no"]);
  }
  return [
    facts(rows),
    h("h3", { text: "Parameters" }), json(known(job.parameters)),
    ...(job.result ? [h("h3", { text: "Result" }), json(known(job.result))] : []),
    h("h3", { text: "Outputs" }), outputsTable(job),
    h("h3", { text: "Webhook deliveries" }), deliveriesTable(job),
  ];
}

/** Read the card's job and show it in the card's detail. */
export async function loadDetail(card) {
  const body = card.querySelector(".detail-body");
  const request = {};
  asked.set(card, request);
  body.setAttribute("aria-busy", "true");
  try {
    const { job } = await graphql(JOB_DETAIL, { id: card.dataset.jobId });
    if (asked.get(card) !== request) return;
    body.replaceChildren(...(job ? render(job) : [h("p", { class: "muted", text: "This job is gone." })]));
    body.dataset.version = job ? String(job.version) : "";
  } catch (error) {
    if (asked.get(card) === request) body.replaceChildren(h("p", { class: "job-error", text: error.message }));
  } finally {
    if (asked.get(card) === request) body.setAttribute("aria-busy", "false");
  }
}
