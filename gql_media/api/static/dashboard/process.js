// Process a file: upload it to POST /uploads, then run processImage with named variants (an
// image) or processVideo with operations (video or audio); the job joins the live list.

import { upload, graphql } from "./api.js";
import { el, formatBytes, formatSize, showErrors } from "./dom.js";
import { PROCESS_IMAGE, PROCESS_VIDEO } from "./queries.js";

const DEFAULT_VARIANTS = [{ name: "thumb", operation: "thumbnail" }];
let media = null; // the upload being processed

function addVariant({ name = "", operation = "thumbnail" } = {}) {
  const row = el("variant-template").content.firstElementChild.cloneNode(true);
  const list = el("variant-list");
  row.querySelector('[name="name"]').value = name || `variant-${list.children.length + 1}`;
  row.querySelector('[name="operation"]').value = operation;
  showOperationFields(row);
  list.append(row);
  return row;
}

function showOperationFields(row) {
  const operation = row.querySelector('[name="operation"]').value;
  for (const label of row.querySelectorAll("[data-for]")) label.hidden = label.dataset.for !== operation;
}

function numberOf(row, name) {
  const value = row.querySelector(`[name="${name}"]`).value.trim();
  return value === "" ? null : Number(value);
}

function variantInput(row) {
  const field = (name) => row.querySelector(`[name="${name}"]`).value;
  const operations = {
    thumbnail: () => ({ thumbnail: { size: numberOf(row, "size") } }),
    resize: () => ({ resize: { width: numberOf(row, "width"), height: numberOf(row, "height") } }),
    rotate: () => ({ rotate: { degrees: numberOf(row, "degrees") } }),
    textWatermark: () => ({ textWatermark: { text: field("text") } }),
  };
  const make = operations[field("operation")];
  return {
    name: field("name").trim(),
    operations: make ? [make()] : [],
    format: field("format") || null,
  };
}

function videoInput(form) {
  const checked = (name) => form.elements[name].checked && !form.elements[name].disabled;
  const operations = [];
  if (checked("op-thumbnail")) {
    operations.push({
      videoThumbnail: {
        fraction: Number(form.elements["thumbnail-fraction"].value),
        maxSize: Number(form.elements["thumbnail-size"].value) || null,
        format: form.elements["thumbnail-format"].value,
      },
    });
  }
  if (checked("op-metadata")) operations.push({ videoMetadata: true });
  if (checked("op-transcode")) {
    const height = form.elements["transcode-height"].value;
    operations.push({
      transcode: { targetHeight: height ? Number(height) : null, quality: form.elements["transcode-quality"].value },
    });
  }
  if (checked("op-audio")) operations.push({ extractAudio: { codec: form.elements["audio-codec"].value } });
  return operations;
}

function describe(asset) {
  const parts = [asset.filename ?? asset.id, asset.contentType, formatSize(asset), formatBytes(asset.byteSize)];
  const duration = asset.metadata?.duration;
  if (duration) parts.push(`${duration.toFixed(1)} s`);
  return parts.filter(Boolean).join(" · ");
}

/** Show the editor that fits the upload: variants for an image, operations otherwise. */
function choose(asset) {
  media = asset;
  const type = asset.contentType.split("/")[0];
  el("variants").hidden = type !== "image";
  el("operations").hidden = type === "image";
  if (type === "image" && el("variant-list").children.length === 0) DEFAULT_VARIANTS.forEach(addVariant);
  const hasVideo = type === "video";
  for (const name of ["op-thumbnail", "op-transcode"]) {
    el("process").elements[name].disabled = !hasVideo;
    el("process").elements[name].closest(".op").classList.toggle("unavailable", !hasVideo);
  }
  el("process-submit").disabled = false;
}

async function uploadChosen(event) {
  const file = event.currentTarget.files[0];
  const status = el("upload-status");
  const errors = el("process-errors");
  media = null;
  el("process-submit").disabled = true;
  el("variants").hidden = true;
  el("operations").hidden = true;
  showErrors(errors, []);
  if (!file) {
    status.textContent = "";
    return;
  }
  status.dataset.state = "uploading";
  status.textContent = `Uploading ${file.name}…`;
  try {
    const answer = await upload(file);
    showErrors(errors, answer.userErrors);
    if (answer.media) {
      status.dataset.state = "uploaded";
      status.textContent = `Uploaded: ${describe(answer.media)}`;
      choose(answer.media);
    } else {
      status.dataset.state = "refused";
      status.textContent = `${file.name} was refused.`;
    }
  } catch (error) {
    status.dataset.state = "failed";
    status.textContent = "";
    showErrors(errors, [{ code: "REQUEST_FAILED", message: error.message }]);
  }
}

async function submit(event, receive) {
  event.preventDefault();
  if (!media) return;
  const form = event.currentTarget;
  const errors = el("process-errors");
  const button = el("process-submit");
  const image = media.contentType.startsWith("image/");
  const [query, field, input] = image
    ? [PROCESS_IMAGE, "processImage", { mediaId: media.id, variants: [...el("variant-list").children].map(variantInput) }]
    : [PROCESS_VIDEO, "processVideo", { mediaId: media.id, operations: videoInput(form) }];
  button.disabled = true;
  try {
    const payload = (await graphql(query, { input }))[field];
    showErrors(errors, payload.userErrors);
    if (payload.job) receive(payload.job, true);
  } catch (error) {
    showErrors(errors, [{ code: "REQUEST_FAILED", message: error.message }]);
  } finally {
    button.disabled = false;
  }
}

export function setUpProcess(receive) {
  el("upload-file").addEventListener("change", uploadChosen);
  el("process").addEventListener("submit", (event) => submit(event, receive));
  el("add-variant").addEventListener("click", () => addVariant().querySelector("input").focus());
  const variants = el("variant-list");
  variants.addEventListener("change", (event) => {
    if (event.target.name === "operation") showOperationFields(event.target.closest(".variant"));
  });
  variants.addEventListener("click", (event) => {
    if (event.target.closest("[data-remove]")) event.target.closest(".variant").remove();
  });
}
