// How the dashboard talks to the api: GraphQL over HTTP, raw uploads to POST /uploads, and
// one graphql-transport-ws subscription that survives dropped connections.

const GRAPHQL_PATH = "/graphql";
const UPLOAD_PATH = "/uploads";
const KEY_STORAGE = "gql-media-key";

/** The api refused the request for want of a (valid) API key. */
export class AuthRequired extends Error {
  constructor() {
    super("this api needs an API key: enter one above");
    this.name = "AuthRequired";
  }
}

export function apiKey() {
  try {
    return window.localStorage.getItem(KEY_STORAGE);
  } catch {
    return null; // storage can be disabled; the key is optional
  }
}

export function saveApiKey(key) {
  try {
    if (key) window.localStorage.setItem(KEY_STORAGE, key);
    else window.localStorage.removeItem(KEY_STORAGE);
  } catch {
    // without storage the key cannot be kept; requests go without it
  }
}

function authorization(headers) {
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

export async function graphql(query, variables = {}) {
  const response = await fetch(GRAPHQL_PATH, {
    method: "POST",
    headers: authorization({ "Content-Type": "application/json", Accept: "application/json" }),
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json().catch(() => null);
  if (response.status === 401) throw new AuthRequired();
  if (!response.ok || !body || body.errors) {
    const first = body?.errors?.[0];
    const code = first?.extensions?.code;
    const message = first?.message ?? `request failed (HTTP ${response.status})`;
    throw new Error(code ? `${code}: ${message}` : message);
  }
  return body.data;
}

/** POST the file's bytes to /uploads; answers ``{ media, userErrors }`` like uploadMedia. */
export async function upload(file) {
  const url = `${UPLOAD_PATH}?${new URLSearchParams({ filename: file.name })}`;
  const response = await fetch(url, {
    method: "POST",
    // the api tells the type from the content; a form's content types (text/plain...)
    // would be refused, as they need no CORS preflight
    headers: authorization({ "Content-Type": "application/octet-stream" }),
    body: file,
  });
  if (response.status === 401) throw new AuthRequired();
  const body = await response.json().catch(() => null);
  if (body?.userErrors) return body;
  const first = body?.errors?.[0];
  throw new Error(first?.message ?? `upload failed (HTTP ${response.status})`);
}

/** One graphql-transport-ws subscription whose variables can change; reconnects on its own. */
export class LiveSubscription {
  constructor({ query, variables, onNext, onSubscribed, onState }) {
    this.query = query;
    this.variables = variables; // () => the current variables
    this.onNext = onNext;
    this.onSubscribed = onSubscribed;
    this.onState = onState;
    this.failures = 0;
    this.nextId = 1;
    this.operationId = null;
    this.acknowledged = false;
    this.socket = null;
  }

  start() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}${GRAPHQL_PATH}`, "graphql-transport-ws");
    this.socket = socket;
    this.acknowledged = false;
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

  /** Follow the current variables instead: the old operation ends, a new one starts. */
  resubscribe() {
    if (!this.acknowledged) return; // subscribes with the current variables once acknowledged
    if (this.operationId) this.send({ id: this.operationId, type: "complete" });
    this.subscribe();
  }

  subscribe() {
    this.operationId = String(this.nextId++);
    const payload = { query: this.query, variables: this.variables() };
    this.send({ id: this.operationId, type: "subscribe", payload });
    this.onSubscribed();
  }

  send(message) {
    this.socket.send(JSON.stringify(message));
  }

  receive(message) {
    switch (message.type) {
      case "connection_ack":
        this.failures = 0;
        this.acknowledged = true;
        this.onState("live", "Live");
        this.subscribe();
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
    this.acknowledged = false;
    if (code === 4401 || code === 4403) {
      this.onState("error", "Refused: enter a valid API key", true);
      return; // until restart()
    }
    // Exponential backoff with jitter: up to 0.5 s, 1 s, 2 s … 10 s.
    const delay = Math.min(10_000, 500 * 2 ** this.failures) * (0.5 + Math.random() / 2);
    this.failures += 1;
    this.onState("offline", `Reconnecting in ${Math.ceil(delay / 1000)} s…`);
    this.timer = window.setTimeout(() => this.start(), delay);
  }
}
