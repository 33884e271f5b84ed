// The live job dashboard: generateImage over HTTP, one jobEvents subscription over
// graphql-transport-ws, and a list of job cards kept at each job's newest version.

const GRAPHQL_PATH = "/graphql";
const KEY_STORAGE = "gql-media-key";
const PAGE_SIZE = 20;
const MAX_CARDS = 50;
const ACTIVE = new Set(["QUEUED", "RUNNING"]);
const RETRYABLE = new Set(["FAILED", "CANCELED"]);

const JOB_FIELDS = `
fragment JobCard on Job {
  id kind status progress version prompt provider parameters createdAt
  error { code message }
  outputs { id url width height contentType }
}`;

const JOBS_QUERY = `query Jobs($first: Int) {
  jobs(first: $first) { edges { node { ...JobCard } } }
}${JOB_FIELDS}`;

const EVENTS_SUBSCRIPTION = `subscription JobEvents { jobEvents { ...JobCard } }${JOB_FIELDS}`;

const GENERATE_MUTATION = `mutation Generate($input: GenerateImageInput!) {
  generateImage(input: $input) { job { ...JobCard } userErrors { field code message } }
}${JOB_FIELDS}`;

// cancelJob and retryJob: the card's buttons name the action.
const actionMutation = (field) => `mutation Act($id: ID!) {
  ${field}(id: $id) { job { ...JobCard } userErrors { field code message } }
}${JOB_FIELDS}`;

// -- transport ------------------------------------------------------------------------

function apiKey() {
  try {
    return window.localStorage.getItem(KEY_STORAGE);
  } catch {
    return null; // storage can be disabled; the key is optional
  }
}

function saveApiKey(key) {
  try {
    if (key) window.localStorage.setItem(KEY_STORAGE, key);
    else window.localStorage.removeItem(KEY_STORAGE);
  } catch {
    // without storage the key cannot be kept; requests go without it
  }
}

async function graphql(query, variables = {}) {
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(GRAPHQL_PATH, {
    method: "POST",
    headers,
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json().catch(() => null);
  if (response.status === 401) throw new Error("this api needs an API key: enter one above");
  if (!response.ok || !body || body.errors) {
    const first = body?.errors?.[0];
    throw new Error(first?.message ?? `request failed (HTTP ${response.status})`);
  }
  return body.data;
}

/** One graphql-transport-ws subscription that survives dropped connections. */
class LiveSubscription {
  constructor({ query, onNext, onConnected, onState }) {
    this.query = query;
    this.onNext = onNext;
    this.onConnected = onConnected;
    this.onState = onState;
    this.failures = 0;
    this.nextId = 1;
    this.operationId = null;
    this.socket = null;
  }

  start() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}${GRAPHQL_PATH}`, "graphql-transport-ws");
    this.socket = socket;
    socket.addEventListener("open", () => {
      const key = apiKey();
      this.send({ type: "connection_init", payload: key ? { authorization: `Bearer ${key}` } : {} });
    });
    socket.addEventListener("message", (event) => this.receive(JSON.parse(event.data)));
    socket.addEventListener("close", (event) => this.retryLater(socket, event.code));
  }

  /** Connect again now, e.g. with a new API key. */
  restart() {
    const old = this.socket;
    this.socket = null; // its close event must not schedule a reconnect
    old?.close(1000, "restarting");
    window.clearTimeout(this.timer);
    this.failures = 0;
    this.start();
  }

  send(message) {
    this.socket.send(JSON.stringify(message));
  }

  receive(message) {
    switch (message.type) {
      case "connection_ack":
        this.failures = 0;
        this.operationId = String(this.nextId++);
        this.send({ id: this.operationId, type: "subscribe", payload: { query: this.query } });
        this.onState("live", "Live");
        this.onConnected();
        break;
      case "ping":
        this.send({ type: "pong", payload: message.payload });
        break;
      case "next":
        if (message.id === this.operationId) this.onNext(message.payload);
        break;
      case "error":
        if (message.id === this.operationId) {
          this.onState("error", `Subscription refused: ${message.payload?.[0]?.message ?? "unknown error"}`);
        }
        break;
      case "complete":
        if (message.id === this.operationId) this.socket.close(1000, "subscription completed");
        break;
    }
  }

  retryLater(socket, code) {
    if (socket !== this.socket) return;
    this.operationId = null;
    if (code === 4401 || code === 4403) {
      this.onState("error", "Refused: enter a valid API key");
      return; // until restart()
    }
    // Exponential backoff with jitter: up to 0.5 s, 1 s, 2 s … 10 s.
    const delay = Math.min(10_000, 500 * 2 ** this.failures) * (0.5 + Math.random() / 2);
    this.failures += 1;
    this.onState("offline", `Reconnecting in ${Math.ceil(delay / 1000)} s…`);
    this.timer = window.setTimeout(() => this.start(), delay);
  }
}

// -- state ------------------------------------------------------------------------------

const jobs = new Map(); // id → newest known job

/** Keep the job if it is newer than what is known; returns whether it was. */
function remember(job) {
  const known = jobs.get(job.id);
  if (known && known.version >= job.version) return false;
  jobs.set(job.id, job);
  return true;
}

function newestFirst(a, b) {
  return Date.parse(b.createdAt) - Date.parse(a.createdAt) || (a.id < b.id ? 1 : -1);
}

// -- rendering --------------------------------------------------------------------------

const el = (id) => document.getElementById(id);
const list = el("jobs");
const template = el("job-template");
const STATUS_WORDS = {
  QUEUED: "is queued", RUNNING: "is running", SUCCEEDED: "succeeded", FAILED: "failed",
  CANCELED: "was canceled",
};

function announce(text) {
  el("announcer").textContent = text;
}

function safeUrl(value) {
  try {
    const url = new URL(value, window.location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

function label(job) {
  return job.prompt ?? job.kind.toLowerCase().replaceAll("_", " ");
}

function meta(job) {
  const parts = [job.provider];
  const { width, height, numOutputs } = job.parameters ?? {};
  if (width && height) parts.push(`${width}×${height}`);
  if (numOutputs > 1) parts.push(`${numOutputs} images`);
  parts.push(new Date(job.createdAt).toLocaleTimeString());
  return parts.join(" · ");
}

function renderOutputs(box, job) {
  const ready = job.status === "SUCCEEDED" && job.outputs.length > 0;
  box.hidden = !ready;
  if (!ready || box.dataset.version === String(job.version)) return;
  box.dataset.version = String(job.version);
  const thumbnails = job.outputs.flatMap((asset, index) => {
    const url = safeUrl(asset.url);
    if (!url) return [];
    const link = document.createElement("a");
    link.href = url;
    link.target = "_blank";
    link.rel = "noopener";
    const image = document.createElement("img");
    image.src = url;
    image.alt = `Output ${index + 1} of “${label(job)}”`;
    if (asset.width && asset.height) {
      image.width = asset.width;
      image.height = asset.height;
    }
    link.append(image);
    return [link];
  });
  box.replaceChildren(...thumbnails);
}

function renderJob(job) {
  let card = list.querySelector(`[data-job-id="${CSS.escape(job.id)}"]`);
  const isNew = !card;
  if (isNew) {
    card = template.content.firstElementChild.cloneNode(true);
    card.dataset.jobId = job.id;
  }
  const changed = card.dataset.status !== job.status;
  card.dataset.status = job.status;

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
  card.querySelector('[data-action="retry"]').hidden = !RETRYABLE.has(job.status);

  if (isNew) placeCard(card, job);
  if (changed && !isNew) announce(`Job “${label(job)}” ${STATUS_WORDS[job.status] ?? job.status}.`);
}

function placeCard(card, job) {
  const next = [...list.children].find((other) => newestFirst(job, jobs.get(other.dataset.jobId)) < 0);
  list.insertBefore(card, next ?? null);
  while (list.children.length > MAX_CARDS) {
    const last = list.lastElementChild;
    jobs.delete(last.dataset.jobId);
    last.remove();
  }
  renderCount();
}

function renderCount() {
  const count = list.children.length;
  el("jobs-empty").hidden = count > 0;
  el("jobs-count").textContent = count === 1 ? "1 job" : `${count} jobs`;
}

function receive(job) {
  if (remember(job)) renderJob(job);
}

function setConnection(state, text) {
  const status = el("connection");
  status.dataset.state = state;
  status.textContent = text;
}

// -- actions ----------------------------------------------------------------------------

function showErrors(target, errors) {
  target.replaceChildren(
    ...errors.map(({ code, message }) => {
      const item = document.createElement("li");
      const strong = document.createElement("strong");
      strong.textContent = code;
      item.append(strong, `: ${message}`);
      return item;
    }),
  );
}

let loading = 0;

async function refresh() {
  loading += 1;
  list.setAttribute("aria-busy", "true");
  try {
    const data = await graphql(JOBS_QUERY, { first: PAGE_SIZE });
    data.jobs.edges.forEach((edge) => receive(edge.node));
  } catch (error) {
    setConnection("error", `Could not load jobs: ${error.message}`);
  } finally {
    loading -= 1;
    list.setAttribute("aria-busy", String(loading > 0));
  }
}

async function submit(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const errors = el("form-errors");
  const [width, height] = form.elements.size.value.split("x").map(Number);
  const input = {
    prompt: form.elements.prompt.value,
    provider: form.elements.provider.value,
    width,
    height,
    numOutputs: Number(form.elements.outputs.value),
  };
  const button = el("submit");
  button.disabled = true;
  try {
    const { generateImage: payload } = await graphql(GENERATE_MUTATION, { input });
    showErrors(errors, payload.userErrors);
    form.elements.prompt.setAttribute("aria-invalid", String(payload.userErrors.length > 0));
    if (payload.job) {
      receive(payload.job);
      form.elements.prompt.value = "";
    }
  } catch (error) {
    showErrors(errors, [{ code: "REQUEST_FAILED", message: error.message }]);
  } finally {
    button.disabled = false;
  }
}

async function act(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const card = button.closest("[data-job-id]");
  const action = button.dataset.action;
  const error = card.querySelector(".job-error");
  button.disabled = true;
  try {
    const field = `${action}Job`;
    const payload = (await graphql(actionMutation(field), { id: card.dataset.jobId }))[field];
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

// -- start ------------------------------------------------------------------------------

el("generate").addEventListener("submit", submit);
list.addEventListener("click", act);
renderCount();
refresh();
const live = new LiveSubscription({
  query: EVENTS_SUBSCRIPTION,
  onNext: (payload) => {
    if (payload.data?.jobEvents) receive(payload.data.jobEvents);
  },
  onConnected: refresh, // after subscribing, so that no change in between is lost
  onState: setConnection,
});
live.start();

el("api-key").value = apiKey() ?? "";
el("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  saveApiKey(el("api-key").value.trim());
  event.currentTarget.closest("details").open = false;
  live.restart();
});
