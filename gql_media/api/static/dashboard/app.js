// The live job dashboard: forms that generate and process media, and the job list kept live
// by one jobEvents subscription over graphql-transport-ws. Everything it does goes through
// the public API: GraphQL queries, mutations and subscriptions, and POST /uploads.

import { AuthRequired, LiveSubscription, apiKey, saveApiKey } from "./api.js";
import { announce, el } from "./dom.js";
import { loadProviders, setUpGenerate } from "./generate.js";
import { eventFilter, receive, reload, setProviderChoices, setUpJobs } from "./jobs.js";
import { setUpProcess } from "./process.js";
import { JOB_EVENTS } from "./queries.js";

function setConnection(state, text) {
  const status = el("connection");
  status.dataset.state = state;
  status.textContent = text;
}

/** Ask for a key: the api refused a request, or the WebSocket, for want of one. */
function askForKey() {
  setConnection("error", "This server needs an API key");
  el("key-needed").hidden = false;
  el("jobs-loading").textContent = "Enter an API key to see the jobs.";
  const box = el("key-box");
  if (!box.open) {
    box.open = true;
    el("api-key").focus();
  }
}

function problem(error) {
  if (error instanceof AuthRequired) askForKey();
  else setConnection("error", `Request failed: ${error.message}`);
}

/** A job this page just started: shown, and followed live like every other. */
function started(job) {
  receive(job);
  const card = document.querySelector(`[data-job-id="${CSS.escape(job.id)}"]`);
  if (card) card.scrollIntoView({ block: "nearest" });
  else announce("The new job is hidden by the filters.");
}

async function providers() {
  try {
    setProviderChoices(await loadProviders());
  } catch (error) {
    problem(error);
  }
}

const live = new LiveSubscription({
  query: JOB_EVENTS,
  variables: () => ({ filter: eventFilter() }),
  onNext: (payload) => {
    if (payload.data?.jobEvents) receive(payload.data.jobEvents);
  },
  onSubscribed: reload, // after subscribing, so that no change in between is lost
  onState: (state, text, needsKey) => (needsKey ? askForKey() : setConnection(state, text)),
});

setUpJobs({
  onFilters: () => {
    if (live.acknowledged) live.resubscribe();
    else reload(); // offline: the list now, the subscription when it connects
  },
  problem,
});
setUpGenerate(started);
setUpProcess(started);
providers();
live.start();

el("api-key").value = apiKey() ?? "";
el("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  saveApiKey(el("api-key").value.trim());
  el("key-needed").hidden = true;
  el("jobs-loading").textContent = "Loading jobs…";
  event.currentTarget.closest("details").open = false;
  setConnection("connecting", "Connecting…");
  live.restart();
  providers();
});
