// The job list: pages of the jobs query under the chosen filters, kept live by jobEvents,
// each job at its newest version, with the real count of matching jobs.

import { graphql } from "./api.js";
import { loadDetail } from "./detail.js";
import { announce, el, formatBytes, formatSize, h, safeUrl } from "./dom.js";
import { JOB_COUNT, JOBS, jobAction } from "./queries.js";

const PAGE_SIZE = 20;
const MAX_RELOAD = 100; // the api's default largest page
const ACTIVE = new Set(["QUEUED", "RUNNING"]);
const STATUS_WORDS = {
  QUEUED: "is queued", RUNNING: "is running", SUCCEEDED: "succeeded", FAILED: "failed",
  CANCELED: "was canceled",
};
const KIND_WORDS = {
  GENERATE_IMAGE: "Generate image", PROCESS_IMAGE: "Process image", PROCESS_VIDEO: "Process video",
};

const list = el("jobs");
const template = el("job-template");
const seen = new Map(); // id → newest version received, whatever the filters
let filter = { statuses: [], kind: null, provider: null };
let generation = 0; // rises with every change of filters: older answers are dropped
let loaded = false; // the first page under the current filters has answered
let total = 0;
let endCursor = null;
let hasNextPage = false;
let tick = 0; // rises with every job received, to tell what changed during a reload
let busy = 0;
let paging = false; // a page is being applied: it brings its own count
let onProblem = () => {};

// -- what is shown ----------------------------------------------------------------------

/** Retrying helps a canceled job, and a failed one whose error may pass or that ran out of
 * attempts; a job refused for what it asked fails the same way again. */
export function canRetry(job) {
  if (job.status === "CANCELED") return true;
  if (job.status !== "FAILED") return false;
  return Boolean(job.error?.retryable) || job.attempts >= job.maxAttempts;
}

function matches(job) {
  return (
    (filter.statuses.length === 0 || filter.statuses.includes(job.status)) &&
    (!filter.kind || job.kind === filter.kind) &&
    (!filter.provider || job.provider === filter.provider)
  );
}

/** The filter of the jobs query; the subscription leaves status out (see eventFilter). */
function queryFilter() {
  const value = eventFilter() ?? {};
  if (filter.statuses.length) value.status = filter.statuses;
  return Object.keys(value).length ? value : null;
}

/** What jobEvents is asked for: status is checked here, so that a job leaving the chosen
 * statuses is seen leaving (its card goes) instead of staying at its last state. */
export function eventFilter() {
  const value = {};
  if (filter.kind) value.kind = filter.kind;
  if (filter.provider) value.provider = filter.provider;
  return Object.keys(value).length ? value : null;
}

function filtered() {
  return filter.statuses.length > 0 || Boolean(filter.kind) || Boolean(filter.provider);
}

function operationName(operation) {
  return operation.name ?? Object.keys(operation).find((key) => key !== "name" && operation[key] !== null);
}

export function label(job) {
  if (job.prompt) return job.prompt;
  const parameters = job.parameters ?? {};
  const names = (parameters.variants ?? []).map((variant) => variant.name)
    .concat((parameters.operations ?? []).map(operationName));
  const kind = KIND_WORDS[job.kind] ?? job.kind;
  return names.length ? `${kind}: ${names.join(", ")}` : kind;
}

function meta(job) {
  const parts = [job.provider];
  const { width, height, numOutputs } = job.parameters ?? {};
  if (width && height) parts.push(`${width}×${height}`);
  if (numOutputs > 1) parts.push(`${numOutputs} images`);
  parts.push(new Date(job.createdAt).toLocaleTimeString());
  return parts.join(" · ");
}

function outputElement(asset, index, job) {
  const url = safeUrl(asset.url);
  if (!url) return null;
  const name = asset.name ?? `output ${index + 1}`;
  const description = `Output ${index + 1} of “${label(job)}”`;
  const type = asset.contentType.split("/")[0];
  let media;
  if (type === "image") {
    const image = h("img", { src: url, alt: description, loading: "lazy" });
    if (asset.width && asset.height) {
      image.width = asset.width;
      image.height = asset.height;
    }
    media = h("a", { href: url, target: "_blank", rel: "noopener" }, image);
  } else if (type === "video" || type === "audio") {
    media = h(type, { src: url, controls: true, preload: "metadata", "aria-label": description });
  } else {
    media = h("a", { href: url, target: "_blank", rel: "noopener", class: "file", text: name });
  }
  const caption = [name, formatSize(asset), formatBytes(asset.byteSize)].filter(Boolean).join(" · ");
  return h("figure", { class: `output output-${type}`, "data-content-type": asset.contentType },
    media, h("figcaption", { class: "muted", text: caption }));
}

function renderOutputs(box, job) {
  const ready = job.status === "SUCCEEDED" && job.outputs.length > 0;
  box.hidden = !ready;
  if (!ready || box.dataset.version === String(job.version)) return;
  box.dataset.version = String(job.version);
  box.replaceChildren(...job.outputs.map((asset, index) => outputElement(asset, index, job)).filter(Boolean));
}

function cardOf(id) {
  return list.querySelector(`[data-job-id="${CSS.escape(id)}"]`);
}

function renderJob(job, card) {
  const isNew = !card;
  if (isNew) {
    card = template.content.firstElementChild.cloneNode(true);
    card.dataset.jobId = job.id;
    card.dataset.kind = job.kind;
  }
  const changed = card.dataset.status !== job.status;
  card.dataset.status = job.status;
  card.dataset.version = String(job.version);
  card.dataset.createdAt = job.createdAt;

  const badge = card.querySelector(".badge");
  badge.textContent = job.status;
  badge.className = `badge status-${job.status.toLowerCase()}`;
  card.querySelector(".job-meta").textContent = meta(job);
  card.querySelector(".job-prompt").textContent = label(job);

  const percent = Math.round(Math.max(0, Math.min(1, job.progress)) * 100);
  const bar = card.querySelector(".progress");
  bar.dataset.progress = String(job.progress);
  bar.setAttribute("aria-valuenow", String(percent));
  bar.setAttribute("aria-label", `Progress of “${label(job)}”`);
  bar.firstElementChild.style.width = `${percent}%`;

  const error = card.querySelector(".job-error");
  error.hidden = !job.error;
  if (job.error) {
    const prefix = job.status === "FAILED" ? "" : "Last attempt: ";
    error.textContent = `${prefix}${job.error.code}: ${job.error.message}`;
  }

  renderOutputs(card.querySelector(".job-outputs"), job);
  card.querySelector('[data-action="cancel"]').hidden = !ACTIVE.has(job.status);
  card.querySelector('[data-action="retry"]').hidden = !canRetry(job);

  if (isNew) place(card);
  else if (card.querySelector(".job-detail").open) loadDetail(card);
  if (changed && !isNew) announce(`Job “${label(job)}” ${STATUS_WORDS[job.status] ?? job.status}.`);
}

function newerThan(card, other) {
  const a = Date.parse(card.dataset.createdAt);
  const b = Date.parse(other.dataset.createdAt);
  return a > b || (a === b && card.dataset.jobId > other.dataset.jobId);
}

function place(card) {
  const next = [...list.children].find((other) => newerThan(card, other));
  list.insertBefore(card, next ?? null);
}

function renderState() {
  const count = list.children.length;
  el("jobs-loading").hidden = loaded;
  const empty = el("jobs-empty");
  empty.hidden = !loaded || count > 0;
  let emptyText = "";
  if (!empty.hidden) {
    emptyText = filtered() ? "No jobs match these filters." : "No jobs yet. Submit a prompt to start one.";
  }
  empty.textContent = emptyText;
  el("jobs-count").textContent = loaded ? (total === 1 ? "1 job" : `${total} jobs`) : "";
  const more = el("load-more");
  more.hidden = !loaded || !hasNextPage;
  more.textContent = `Load more (${count} of ${total} shown)`;
  list.setAttribute("aria-busy", String(busy > 0 || !loaded));
}

// -- what is received -------------------------------------------------------------------

/** A job from any answer or event: shown at its newest version, if it matches the filters. */
export function receive(job) {
  if (job.version < (seen.get(job.id) ?? 0)) return;
  seen.set(job.id, job.version);
  tick += 1;
  const card = cardOf(job.id);
  if (card) card.dataset.tick = String(tick);
  if (!matches(job)) {
    if (card) {
      card.remove();
      recount();
    }
    return;
  }
  if (card && Number(card.dataset.version) >= job.version) return;
  renderJob(job, card);
  if (!card) {
    cardOf(job.id).dataset.tick = String(tick);
    recount();
  }
}

let countTimer = null;

/** Ask for the count again soon: a job came into or left the list. */
function recount() {
  renderState();
  if (!loaded || paging) return; // the page being loaded brings the count
  window.clearTimeout(countTimer);
  countTimer = window.setTimeout(async () => {
    const asked = generation;
    try {
      const data = await graphql(JOB_COUNT, { filter: queryFilter() });
      if (asked === generation) {
        total = data.jobs.totalCount;
        renderState();
      }
    } catch (error) {
      onProblem(error);
    }
  }, 100);
}

async function fetchPage(variables) {
  busy += 1;
  renderState();
  try {
    return await graphql(JOBS, { filter: queryFilter(), ...variables });
  } finally {
    busy -= 1;
    renderState();
  }
}

function applyPage(page) {
  paging = true;
  try {
    page.edges.forEach((edge) => receive(edge.node));
  } finally {
    paging = false;
  }
}

/** The newest jobs again (after connecting, or under new filters); cards this answer should
 * have held and did not (they left the filters meanwhile) go. */
export async function reload() {
  const asked = generation;
  const started = tick;
  const first = Math.min(Math.max(PAGE_SIZE, list.children.length), MAX_RELOAD);
  let data;
  try {
    data = await fetchPage({ first });
  } catch (error) {
    onProblem(error);
    return;
  }
  if (asked !== generation) return;
  const page = data.jobs;
  const returned = new Set(page.edges.map((edge) => edge.node.id));
  const oldest = page.edges.at(-1)?.node.createdAt;
  for (const card of [...list.children]) {
    const untouched = Number(card.dataset.tick ?? 0) <= started;
    const covered = !page.pageInfo.hasNextPage || Date.parse(card.dataset.createdAt) >= Date.parse(oldest);
    if (untouched && covered && !returned.has(card.dataset.jobId)) card.remove();
  }
  const changedMeanwhile = tick > started; // events came while the page was on its way
  applyPage(page);
  if (!loaded || list.children.length <= first) {
    endCursor = page.pageInfo.endCursor;
    hasNextPage = page.pageInfo.hasNextPage;
  }
  total = page.totalCount;
  loaded = true;
  if (changedMeanwhile) recount(); // the count may be from before them
  else renderState();
}

async function loadMore() {
  const asked = generation;
  const button = el("load-more");
  button.disabled = true;
  try {
    const data = await fetchPage({ first: PAGE_SIZE, after: endCursor });
    if (asked !== generation) return;
    applyPage(data.jobs);
    endCursor = data.jobs.pageInfo.endCursor;
    hasNextPage = data.jobs.pageInfo.hasNextPage;
    total = data.jobs.totalCount;
  } catch (error) {
    onProblem(error);
  } finally {
    button.disabled = false;
    renderState();
  }
}

/** Start over under the filters chosen in the form; the caller then subscribes anew. */
function readFilters(form) {
  const status = form.elements.status.value;
  filter = {
    statuses: status ? status.split(",") : [],
    kind: form.elements.kind.value || null,
    provider: form.elements.provider.value || null,
  };
  generation += 1;
  loaded = false;
  total = 0;
  endCursor = null;
  hasNextPage = false;
  window.clearTimeout(countTimer);
  list.replaceChildren();
  renderState();
}

// -- actions ----------------------------------------------------------------------------

async function act(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const card = button.closest("[data-job-id]");
  const field = `${button.dataset.action}Job`;
  const error = card.querySelector(".job-error");
  button.disabled = true;
  try {
    const payload = (await graphql(jobAction(field), { id: card.dataset.jobId }))[field];
    if (payload.job) receive(payload.job);
    // The pressed button hides once the job moves on; keep focus inside the card.
    if (button.hidden) card.querySelector("button[data-action]:not([hidden])")?.focus();
    if (payload.userErrors.length) {
      error.hidden = false;
      error.textContent = payload.userErrors.map((e) => `${e.code}: ${e.message}`).join("; ");
    }
  } catch (failure) {
    error.hidden = false;
    error.textContent = `REQUEST_FAILED: ${failure.message}`;
  } finally {
    button.disabled = false;
  }
}

function toggleDetail(event) {
  const details = event.target;
  if (details.matches?.(".job-detail") && details.open) loadDetail(details.closest("[data-job-id]"));
}

/** Wire the list; ``onFilters`` runs after the filters changed (to subscribe anew). */
export function setUpJobs({ onFilters, problem }) {
  onProblem = problem;
  list.addEventListener("click", act);
  list.addEventListener("toggle", toggleDetail, true); // toggle does not bubble
  el("load-more").addEventListener("click", loadMore);
  const form = el("filters");
  form.addEventListener("change", () => {
    readFilters(form);
    onFilters();
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  renderState();
}

/** The provider filter's choices: every provider the api names. */
export function setProviderChoices(names) {
  const select = el("filter-provider");
  const chosen = select.value;
  select.replaceChildren(h("option", { value: "", text: "All" }),
    ...names.map((name) => h("option", { value: name, text: name })));
  select.value = names.includes(chosen) ? chosen : "";
}
