// postroom dashboard: polls the JSON API, draws the charts as SVG, runs the queue buttons. No libraries.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const SVG = "http://www.w3.org/2000/svg";
const SERIES = { received: "#3b82f6", delivered: "#16a34a", bounced: "#dc2626" };

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    window.location.assign("/login");
    throw new Error("logged out");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function post(path) {
  return api(path, { method: "POST", headers: { "X-CSRF-Token": CSRF, "Content-Type": "application/json" }, body: "{}" });
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function age(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (seconds >= size) return Math.floor(seconds / size) + unit;
  }
  return seconds + "s";
}

function clock(ts) {
  return ts ? new Date(ts * 1000).toLocaleTimeString() : "";
}

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

// A line chart of one or more series over the samples, with the largest value as the scale.
function drawChart(svg, samples, series) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const width = 600, height = 160, pad = 24;
  let top = 1;
  for (const sample of samples) for (const name of Object.keys(series)) top = Math.max(top, sample[name]);
  svg.appendChild(svgElement("line", { x1: pad, y1: height - pad, x2: width, y2: height - pad, stroke: "#999" }));
  svg.appendChild(svgElement("line", { x1: pad, y1: 4, x2: pad, y2: height - pad, stroke: "#999" }));
  const label = svgElement("text", { x: 2, y: 14, "font-size": 11, fill: "#555" });
  label.textContent = String(top);
  svg.appendChild(label);
  const step = samples.length > 1 ? (width - pad - 4) / (samples.length - 1) : 0;
  for (const [name, colour] of Object.entries(series)) {
    const points = samples.map((sample, index) => {
      const x = pad + index * step;
      const y = height - pad - (sample[name] / top) * (height - pad - 8);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    if (points.length === 1) points.push((width - 4) + "," + points[0].split(",")[1]);
    const line = svgElement("polyline", { points: points.join(" "), fill: "none", stroke: colour, "stroke-width": 2 });
    line.setAttribute("class", "series series-" + name);
    line.setAttribute("data-series", name);
    svg.appendChild(line);
  }
  svg.setAttribute("data-points", String(samples.length));
}

function fillTable(id, rows, render) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const item of rows) {
    const row = document.createElement("tr");
    render(row, item);
    body.appendChild(row);
  }
}

async function refreshOverview() {
  const data = await api("/api/overview");
  document.getElementById("queue-size").textContent = data.queue.messages;
  document.getElementById("queue-oldest").textContent = data.queue.messages ? age(data.queue.oldest_age) : "–";
  const last = data.samples[data.samples.length - 1];
  document.getElementById("last-received").textContent = last ? last.received : "–";
  document.getElementById("last-delivered").textContent = last ? last.delivered : "–";
  drawChart(document.getElementById("throughput-chart"), data.samples, SERIES);
  drawChart(document.getElementById("queue-chart"), data.samples, { queue: "#7c3aed" });
  fillTable("deliveries-table", data.deliveries, (row, item) => {
    cell(row, clock(item.ts));
    cell(row, item.queue_id, "mono");
    cell(row, item.rcpt);
    cell(row, item.result + (item.transport ? " (" + item.transport + ")" : ""), "result-" + item.result);
    cell(row, item.error);
  });
  fillTable("refusals-table", data.refusals, (row, item) => {
    cell(row, clock(item.ts));
    cell(row, item.client || item.session_id, "mono");
    cell(row, [item.command, item.argument].filter(Boolean).join(" "));
    cell(row, item.reply);
  });
  document.getElementById("status").textContent = "updated " + new Date().toLocaleTimeString();
}

async function refreshQueue() {
  const query = new URLSearchParams();
  const text = document.getElementById("queue-search").value.trim();
  const state = document.getElementById("queue-state").value;
  if (text) query.set("q", text);
  if (state) query.set("state", state);
  const data = await api("/api/queue?" + query.toString());
  const now = Date.now() / 1000;
  fillTable("queue-table", data.messages, (row, message) => {
    row.dataset.queueId = message.queue_id;
    cell(row, message.queue_id + (message.held ? " (held)" : ""), "mono");
    cell(row, age(now - message.received_at));
    cell(row, message.size);
    cell(row, message.sender || "<>");
    const recipients = message.recipients.map((r) =>
      r.address + " [" + r.state + (r.attempts ? ", " + r.attempts + " attempts" : "") + "]" +
      (r.last_error ? " " + r.last_error : ""));
    cell(row, recipients.join("\n"), "recipients");
    const actions = cell(row, "");
    for (const action of ["retry", "delete"]) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = action === "retry" ? "Retry" : "Delete";
      button.className = "action-" + action;
      button.dataset.action = action;
      button.dataset.queueId = message.queue_id;
      actions.appendChild(button);
    }
  });
  document.getElementById("queue-empty").hidden = data.messages.length > 0;
}

async function refreshChecks() {
  const box = document.getElementById("checks");
  const data = await api("/api/checks");
  box.replaceChildren();
  if (!data.available) {
    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = "DNS checks are not available in this build; run `postroom check` on the server.";
    box.appendChild(note);
    return;
  }
  const table = document.createElement("table");
  for (const finding of data.findings) {
    const row = document.createElement("tr");
    cell(row, finding.level, "level-" + String(finding.level).toLowerCase());
    cell(row, finding.domain || "");
    cell(row, finding.check || finding.name || "");
    cell(row, finding.message || "");
    cell(row, finding.record || "", "mono");
    table.appendChild(row);
  }
  box.appendChild(table);
}

function report(error) {
  document.getElementById("status").textContent = "error: " + error.message;
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("queue-form").addEventListener("submit", (event) => {
    event.preventDefault();
    refreshQueue().catch(report);
  });
  document.getElementById("queue-state").addEventListener("change", () => refreshQueue().catch(report));
  document.getElementById("queue-table").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const { action, queueId } = button.dataset;
    if (action === "delete" && !window.confirm("Delete message " + queueId + "? It will not be delivered.")) return;
    button.disabled = true;
    post("/api/queue/" + encodeURIComponent(queueId) + "/" + action)
      .then((result) => {
        document.getElementById("status").textContent =
          action === "retry" ? "retried " + queueId + " (" + result.retried + " due now)" : "deleted " + queueId;
        return refreshQueue();
      })
      .catch(report)
      .finally(() => { button.disabled = false; });
  });
  document.getElementById("logout").addEventListener("click", () => {
    post("/logout").catch(() => null).finally(() => window.location.assign("/login"));
  });
  refreshOverview().catch(report);
  refreshQueue().catch(report);
  refreshChecks().catch(report);
  setInterval(() => refreshOverview().catch(report), 5000);
  setInterval(() => refreshQueue().catch(report), 15000);
});
