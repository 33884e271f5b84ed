// The generate form: providers and their models from the providers query (only configured
// ones can be chosen), with negative prompt, size, outputs, format and seed.

import { graphql } from "./api.js";
import { el, h, showErrors } from "./dom.js";
import { GENERATE, PROVIDERS } from "./queries.js";

// Offered when a model accepts any size within the api's limits.
const ANY_SIZE = ["256x256", "512x512", "768x512", "512x768", "1024x1024"];
const PREFERRED_SIZE = "512x512";

let providers = [];

function chosenProvider() {
  return providers.find((provider) => provider.name === el("provider").value);
}

function chosenModel() {
  return chosenProvider()?.models.find((model) => model.name === el("model").value);
}

function fill(select, options, preferred) {
  const previous = select.value;
  select.replaceChildren(...options.map(({ value, text, disabled }) => h("option", { value, text, disabled })));
  const usable = options.filter((option) => !option.disabled).map((option) => option.value);
  select.value = [previous, preferred, usable[0]].find((value) => usable.includes(value)) ?? "";
}

function showModel() {
  const model = chosenModel();
  const sizes = model?.sizes.length ? model.sizes : ANY_SIZE;
  fill(el("size"), sizes.map((size) => ({ value: size, text: size.replace("x", "×") })), PREFERRED_SIZE);
  const counts = Array.from({ length: model?.maxOutputs ?? 1 }, (_, index) => String(index + 1));
  fill(el("outputs"), counts.map((count) => ({ value: count, text: count })), "1");
  el("provider-note").textContent = model?.description ?? "";
}

function showProvider() {
  const provider = chosenProvider();
  const models = provider?.models ?? [];
  fill(el("model"), models.map((model) => ({ value: model.name, text: model.name })), provider?.defaultModel);
  el("model").disabled = models.length === 0;
  showModel();
}

/** Read the providers; returns their names. */
export async function loadProviders() {
  const data = await graphql(PROVIDERS);
  providers = data.providers;
  const preferred = providers.find((provider) => provider.isDefault && provider.configured)?.name;
  fill(el("provider"), providers.map((provider) => ({
    value: provider.name,
    text: provider.configured ? provider.name : `${provider.name} (not configured)`,
    disabled: !provider.configured,
  })), preferred);
  el("provider").disabled = false;
  showProvider();
  return providers.map((provider) => provider.name);
}

function input(form) {
  const [width, height] = form.elements.size.value.split("x").map(Number);
  const provider = chosenProvider();
  const value = {
    prompt: form.elements.prompt.value,
    provider: form.elements.provider.value || null,
    width,
    height,
    numOutputs: Number(form.elements.outputs.value),
    outputFormat: form.elements.format.value,
  };
  const model = form.elements.model.value;
  if (model && model !== provider?.defaultModel) value.model = model;
  const negative = form.elements.negativePrompt.value.trim();
  if (negative) value.negativePrompt = negative;
  const seed = form.elements.seed.value.trim();
  if (seed !== "") value.seed = Number(seed);
  return value;
}

async function submit(event, receive) {
  event.preventDefault();
  const form = event.currentTarget;
  const errors = el("form-errors");
  const button = el("submit");
  button.disabled = true;
  try {
    const { generateImage: payload } = await graphql(GENERATE, { input: input(form) });
    showErrors(errors, payload.userErrors);
    const fields = new Set(payload.userErrors.map((error) => error.field));
    for (const name of ["prompt", "negativePrompt", "seed"]) {
      form.elements[name].setAttribute("aria-invalid", String(fields.has(name)));
    }
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

export function setUpGenerate(receive) {
  el("generate").addEventListener("submit", (event) => submit(event, receive));
  el("provider").addEventListener("change", showProvider);
  el("model").addEventListener("change", showModel);
}
