// syncd's admin page: polls GET admin/api/overview every 2 s and draws it. No dependencies.
// Credentials: the endpoint refuses without them (401/403); the page then asks for a service
// key or admin token and keeps it in sessionStorage (this tab only), sent as a Bearer header.
"use strict";

const ENDPOINT = "admin/api/overview";
const POLL_MS = 2000;
const HISTORY = 60; // points per plot: two minutes at one per poll
const TOKEN_KEY = "syncd.admin.token";

const $ = (id) => document.getElementById(id);
const series = { pushes: [], pulls: [], conflicts: [] };
// Per node: its counters at its last heartbeat, and the rates between its last two.
const seen = new Map();
let timer = null;

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function setState(state, text) {
  document.body.dataset.state = state;
  const status = $("status");
  status.className = "status " + (state === "live" ? "live" : state === "stale" ? "stale" : "");
  status.textContent = text;
}

async function poll() {
  clearTimeout(timer);
  const headers = {};
  if (token()) headers.Authorization = "Bearer " + token();
  let response;
  try {
    response = await fetch(ENDPOINT, { headers, cache: "no-store" });
  } catch (err) {
    setState("stale", "cannot reach syncd (" + err.message + "); retrying");
    timer = setTimeout(poll, POLL_MS);
    return;
  }
  if (response.status === 401 || response.status === 403) {
    refused(response.status, await errorOf(response));
    return; // until credentials are entered: a refused page must not keep knocking
  }
  if (!response.ok) {
    const error = await errorOf(response);
    setState("stale", `syncd answered ${response.status} ${error.code}; retrying`);
    timer = setTimeout(poll, POLL_MS);
    return;
  }
  render(await response.json());
  timer = setTimeout(poll, POLL_MS);
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return { code: body.error.code, message: body.error.message };
  } catch {
    return { code: "error", message: response.statusText };
  }
}

function refused(status, error) {
  $("dashboard").hidden = true;
  $("login").hidden = false;
  $("signout").hidden = !token();
  $("refusal").textContent = `${status} ${error.code}: ${error.message}`;
  setState("refused", token() ? "credentials refused" : "not signed in");
  $("token").focus();
}

function render(data) {
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("signout").hidden = !token();
  const time = new Date(data.generated_at).toLocaleTimeString();
  setState("live", `live · node ${data.node} · ${time}`);

  const rates = updateRates(data.nodes);
  for (const key of Object.keys(series)) {
    series[key].push(rates[key]);
    if (series[key].length > HISTORY) series[key].shift();
  }
  const subscribers = data.nodes.reduce(
    (sum, node) => sum + Object.values(node.subscribers).reduce((a, b) => a + b, 0), 0);
  $("k-nodes").textContent = data.nodes.length;
  $("k-subscribers").textContent = integer(subscribers);
  $("k-pushes").textContent = rate(rates.pushes);
  $("k-pulls").textContent = rate(rates.pulls);
  $("k-conflicts").textContent = rate(rates.conflicts);
  const lag = data.lag;
  $("k-lag").textContent = seconds(lag.oldest_transaction_age_seconds);
  $("k-lag-note").textContent = lag.warning
    ? `over ${lag.warning_seconds} s: a long transaction holds every pull back`
    : `warns above ${lag.warning_seconds} s`;
  $("lag-card").classList.toggle("warning", lag.warning);

  plot($("plot-pushes"), series.pushes, "");
  plot($("plot-pulls"), series.pulls, "");
  plot($("plot-conflicts"), series.conflicts, "conflicts");
  $("p-pushes-now").textContent = rate(rates.pushes);
  $("p-pulls-now").textContent = rate(rates.pulls);
  $("p-conflicts-now").textContent = rate(rates.conflicts);

  renderNodes(data);
  renderCollections(data.collections);
  renderErrors(data.errors);
}

// Rates come from successive heartbeats of each node (its totals and PostgreSQL's time of the
// beat), summed over the nodes alive now. A node's first beat has no rate yet.
function updateRates(nodes) {
  const total = { pushes: 0, pulls: 0, conflicts: 0 };
  const alive = new Set();
  for (const node of nodes) {
    alive.add(node.id);
    const at = Date.parse(node.last_seen) / 1000;
    const before = seen.get(node.id);
    let rates = before ? before.rates : { pushes: 0, pulls: 0, conflicts: 0 };
    if (before && at > before.at) {
      const dt = at - before.at;
      rates = {
        pushes: Math.max(0, node.pushed - before.pushed) / dt,
        pulls: Math.max(0, node.pulled - before.pulled) / dt,
        conflicts: Math.max(0, node.conflicts - before.conflicts) / dt,
      };
    }
    if (!before || at > before.at) {
      seen.set(node.id, { at, pushed: node.pushed, pulled: node.pulled,
                          conflicts: node.conflicts, rates });
    }
    for (const key of Object.keys(total)) total[key] += rates[key];
  }
  for (const id of [...seen.keys()]) if (!alive.has(id)) seen.delete(id);
  return total;
}

const SVG = "http://www.w3.org/2000/svg";

function plot(svg, values, kind) {
  const width = 300, height = 80, top = 12;
  const max = Math.max(1, ...values);
  const step = width / (HISTORY - 1);
  const offset = (HISTORY - values.length) * step; // newest point at the right edge
  const points = values.map((v, i) =>
    [offset + i * step, height - 2 - (v / max) * (height - top - 4)]);
  svg.replaceChildren();
  if (points.length > 1) {
    const line = points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join("");
    const area = document.createElementNS(SVG, "path");
    area.setAttribute("d", `${line}L${points.at(-1)[0].toFixed(1)},${height}L${points[0][0].toFixed(1)},${height}Z`);
    area.setAttribute("class", `area ${kind}`);
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", line);
    path.setAttribute("class", `line ${kind}`);
    svg.append(area, path);
  }
  const label = document.createElementNS(SVG, "text");
  label.setAttribute("x", "4");
  label.setAttribute("y", "10");
  label.setAttribute("class", "max");
  label.textContent = `max ${rate(max)}`;
  svg.append(label);
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function fill(table, rows, columns, empty) {
  const body = table.tBodies[0];
  if (!rows.length) {
    const td = cell(empty, "empty");
    td.colSpan = columns;
    const tr = document.createElement("tr");
    tr.append(td);
    body.replaceChildren(tr);
    return;
  }
  body.replaceChildren(...rows);
}

function renderNodes(data) {
  const rows = data.nodes.map((node) => {
    const tr = document.createElement("tr");
    tr.dataset.node = node.id;
    const id = cell(node.id, "mono");
    if (node.id === data.node) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "this page";
      id.append(badge);
    }
    const up = (Date.parse(node.last_seen) - Date.parse(node.started_at)) / 1000
      + node.seen_seconds_ago;
    tr.append(
      id,
      cell(`${node.host}:${node.port}`, "mono"),
      cell(`${node.hostname} · ${node.pid}`),
      cell(duration(up)),
      cell(`${node.seen_seconds_ago.toFixed(1)} s ago`),
      cell(integer(node.subscribers.native ?? 0), "num"),
      cell(integer(node.subscribers["rxdb-server"] ?? 0), "num"),
      cell(integer(node.subscribers["rxdb-ws"] ?? 0), "num"),
      cell(integer(node.pushed), "num pushed"),
      cell(integer(node.pulled), "num pulled"),
      cell(integer(node.conflicts), "num conflicts"),
    );
    return tr;
  });
  fill($("nodes"), rows, 11, "no node has sent a heartbeat yet");
}

function renderCollections(collections) {
  const rows = collections.map((c) => {
    const tr = document.createElement("tr");
    tr.dataset.collection = c.name;
    tr.append(
      cell(c.name, "mono name"),
      cell(`v${c.schema_version}`, "num schema"),
      cell(integer(c.documents), "num documents"),
      cell(integer(c.tombstones), "num tombstones"),
    );
    return tr;
  });
  fill($("collections"), rows, 4, "no collections: syncd collections add NAME --schema FILE.json");
}

function renderErrors(errors) {
  const rows = errors.map((e) => {
    const tr = document.createElement("tr");
    tr.append(
      cell(String(e.status), e.status >= 500 ? "s5" : "s4"),
      cell(e.code || "–", "mono"),
      cell(e.route, "mono"),
      cell(integer(e.count), "num"),
      cell(new Date(e.last_at).toLocaleTimeString()),
    );
    return tr;
  });
  fill($("errors"), rows, 5, "no errors answered");
}

const integers = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
function integer(n) { return integers.format(n); }
function rate(n) { return n >= 100 ? integers.format(n) : n.toFixed(1); }
function seconds(n) { return n < 10 ? `${n.toFixed(2)} s` : `${n.toFixed(0)} s`; }
function duration(s) {
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    poll();
  });
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    seen.clear();
    poll();
  });
  poll();
});
