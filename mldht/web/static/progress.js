"use strict";
// A live view of /api/progress: every number of the tool's snapshot, with its rate of change.

const POLL_MS = 1000;
let previous = null;

function formatNumber(value) {
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  return value.toLocaleString("en-US", { maximumFractionDigits: 2 });
}

function flatten(object, prefix, rows) {
  for (const [key, value] of Object.entries(object)) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      flatten(value, name, rows);
    } else {
      rows.push([name, value]);
    }
  }
  return rows;
}

function render(data, at) {
  document.getElementById("progress-title").textContent = data.title;
  document.title = `${data.title} · mldht`;
  const sections = new Map();
  for (const [name, value] of flatten(data.progress, "", [])) {
    const dot = name.indexOf(".");
    const section = dot < 0 ? "" : name.slice(0, dot);
    const label = dot < 0 ? name : name.slice(dot + 1);
    if (!sections.has(section)) sections.set(section, []);
    sections.get(section).push([name, label, value]);
  }
  const main = document.getElementById("progress-sections");
  main.replaceChildren();
  for (const [section, rows] of sections) {
    const card = document.createElement("section");
    card.className = "card";
    const heading = document.createElement("h2");
    heading.textContent = section || "overview";
    card.append(heading);
    const table = document.createElement("table");
    table.className = "kv";
    for (const [name, label, value] of rows) {
      const row = table.insertRow();
      row.insertCell().textContent = label.replaceAll("_", " ");
      const cell = row.insertCell();
      cell.dataset.key = name;
      if (typeof value === "number") {
        let text = formatNumber(value);
        const before = previous && previous.values.get(name);
        const seconds = previous ? (at - previous.at) / 1000 : 0;
        if (typeof before === "number" && seconds > 0 && value !== before) {
          const rate = (value - before) / seconds;
          text += ` (${rate > 0 ? "+" : ""}${formatNumber(rate)}/s)`;
        }
        cell.textContent = text;
      } else if (Array.isArray(value)) {
        cell.textContent = value.join(", ");
      } else {
        cell.textContent = value === null ? "–" : String(value);
      }
    }
    card.append(table);
    main.append(card);
  }
  previous = { at, values: new Map(flatten(data.progress, "", [])) };
}

async function poll() {
  const state = document.getElementById("progress-state");
  try {
    const response = await fetch("/api/progress", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json(), Date.now());
    state.textContent = "live";
    state.className = "badge live";
  } catch (error) {
    state.textContent = "disconnected";
    state.className = "badge down";
  }
  setTimeout(poll, POLL_MS);
}

poll();
