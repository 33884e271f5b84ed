// Small DOM and formatting helpers shared by the dashboard's modules.

export const el = (id) => document.getElementById(id);

/** An element with attributes (``class``, ``text`` and ``hidden`` are special) and children. */
export function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name === "hidden") node.hidden = true;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function announce(text) {
  el("announcer").textContent = text;
}

/** ``value`` as an absolute http(s) URL, or null: nothing else goes into src or href. */
export function safeUrl(value) {
  try {
    const url = new URL(value, window.location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "";
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function formatTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

export function formatSize(asset) {
  return asset.width && asset.height ? `${asset.width}×${asset.height}` : "";
}

/** A list of ``{code, message}`` as the items of ``target`` (a ``ul``). */
export function showErrors(target, errors) {
  target.replaceChildren(
    ...errors.map(({ code, message }) => h("li", {}, h("strong", { text: code }), `: ${message}`)),
  );
}
