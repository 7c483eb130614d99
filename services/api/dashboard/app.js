// pinhive operator console: plain JavaScript, no build step, no third-party code.
// Data comes over the WebSocket /ws/dashboard (docs/dashboard.md); controls call the admin API.
"use strict";

const TOKEN_KEY = "pinhive.admin-token";
const PROTOCOL = "pinhive.dashboard.v1";
const MAX_PIN_ROWS = 200;
const MAX_LOG_ROWS = 200;
let suppressed = 0;

const $ = (id) => document.getElementById(id);
let socket = null;
let backoff = 500;
let reconnectTimer = null;
let history = [];
let limits = { history_samples: 360 };
const nodes = new Map();

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function setConn(text, cls) {
  const badge = $("conn");
  badge.textContent = text;
  badge.className = "badge " + cls;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0; let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return v.toFixed(i ? 1 : 0) + " " + units[i];
}

async function api(method, path) {
  const response = await fetch(path, { method, headers: { Authorization: "Bearer " + token() } });
  let body = null;
  try { body = await response.json(); } catch (_) { /* no body */ }
  return { status: response.status, body };
}

function failure(result) {
  return (result.body && result.body.error && (result.body.error.details || result.body.error.reason)) || ("HTTP " + result.status);
}

// ---- sign in / out ----

async function signIn(event) {
  event.preventDefault();
  const value = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, value);
  const check = await api("GET", "/admin/dashboard/history");
  if (check.status !== 200) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("signin-error").textContent = check.status === 403 ? "This token has no admin scope." : "Sign-in failed: " + failure(check);
    return;
  }
  $("token").value = "";
  $("signin-error").textContent = "";
  start();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  if (analyticsTimer) clearTimeout(analyticsTimer);
  if (reconnectTimer) clearTimeout(reconnectTimer);
  if (socket) { socket.onclose = null; socket.close(); socket = null; }
  $("console").hidden = true;
  $("signin").hidden = false;
  $("signout").hidden = true;
  setConn("signed out", "off");
}

function start() {
  $("signin").hidden = true;
  $("console").hidden = false;
  $("signout").hidden = false;
  connect();
  refreshAnalytics();
}

// ---- analytics (GET /admin/analytics: this instance's access partitions, every 10 s) ----

let analyticsTimer = null;

function rows(tableId, entries) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...entries.map((cells) => {
    const tr = el("tr");
    cells.forEach((cell) => tr.appendChild(el("td", String(cell))));
    return tr;
  }));
}

async function refreshAnalytics() {
  if (analyticsTimer) clearTimeout(analyticsTimer);
  if (!token()) return;
  analyticsTimer = setTimeout(refreshAnalytics, 10000);
  const result = await api("GET", "/admin/analytics");
  if (result.status !== 200) {
    $("analytics-note").textContent = result.status === 503 ? "Analytics is off on this instance." : "Analytics: " + failure(result);
    return;
  }
  const summary = result.body;
  const partitions = summary.partitions || [];
  $("analytics-note").textContent = partitions.length + " access partition(s) on this instance";
  $("analytics-budget").textContent = bytes(summary.budget_used_bytes) + " / " + bytes(summary.budget_bytes);
  const levels = partitions.map((p) => p.water_level_views_per_day).filter((v) => v !== null && v !== undefined);
  $("analytics-water").textContent = levels.length ? Math.max(...levels).toFixed(1) : "–";
  $("analytics-tracked").textContent = partitions.reduce((n, p) => n + p.tracked_cids, 0);
  // Every region the optimizer knows, read or not (before the first epoch ends, none is).
  const regions = new Map((summary.regions || []).map((region) => [region, 0]));
  const targets = new Map();
  let top = [];
  for (const p of partitions) {
    for (const [region, rate] of p.demand_by_region || []) regions.set(region, (regions.get(region) || 0) + rate);
    for (const [target, count] of p.targets || []) targets.set(target, (targets.get(target) || 0) + count);
    top = top.concat(p.top_cids || []);
  }
  rows("analytics-regions", [...regions].map(([region, rate]) => [region, bytes(rate) + "/s"]));
  rows("analytics-targets", [...targets].map(([target, count]) => [target + " replica(s)", count]));
  top.sort((a, b) => b.bytes_per_sec - a.bytes_per_sec);
  rows("analytics-top", top.slice(0, 10).map((t) => [t.cid, bytes(t.bytes_per_sec) + "/s", t.target]));
}

// ---- the socket ----

function connect() {
  reconnectTimer = null;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // The token travels in the Sec-WebSocket-Protocol header, never in the URL.
  socket = new WebSocket(scheme + "://" + location.host + "/ws/dashboard", [PROTOCOL, "bearer." + token()]);
  setConn("connecting", "retry");
  socket.onopen = () => { backoff = 500; setConn("live", "live"); };
  socket.onmessage = (event) => {
    let message;
    try { message = JSON.parse(event.data); } catch (_) { return; }
    handle(message);
  };
  socket.onclose = (event) => {
    socket = null;
    if (!token()) return;
    if (event.code === 1008 && /token/.test(event.reason)) { signOut(); $("signin-error").textContent = "The token was revoked or expired."; return; }
    setConn("reconnecting in " + Math.round(backoff / 1000 * 10) / 10 + " s", "retry");
    reconnectTimer = setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 10000);
  };
}

function handle(message) {
  switch (message.type) {
    case "snapshot":
      $("instance").textContent = message.instance || "";
      limits = message.limits || limits;
      nodes.clear();
      $("nodes").tBodies[0].replaceChildren();
      for (const node of message.nodes) renderNode(node);
      if (message.stats) renderStats(message.stats);
      $("pins").tBodies[0].replaceChildren();
      for (const pin of message.recent) renderPin(pin);
      history = message.history || [];
      renderCharts();
      $("logs").tBodies[0].replaceChildren();
      for (const line of message.logs || []) renderLog(line);
      break;
    case "log": renderLog(message); break;
    case "log_suppressed":
      suppressed += message.count;
      $("log-suppressed").textContent = suppressed + " more not shown (over 20 per second)";
      break;
    case "stats": renderStats(message.stats); break;
    case "node": renderNode(message.node); renderCharts(); break;
    case "node_removed": {
      nodes.delete(message.id);
      const row = document.querySelector(`#nodes tr[data-node="${CSS.escape(message.id)}"]`);
      if (row) row.remove();
      break;
    }
    case "pin": renderPin(message); break;
    case "sample":
      history.push(message.sample);
      while (history.length > (limits.history_samples || 360)) history.shift();
      renderCharts();
      break;
    case "feed_lagged":
      // Some changes were missed: ask for a fresh snapshot.
      if (socket) socket.send(JSON.stringify({ type: "snapshot" }));
      break;
    default: break;
  }
}

// ---- rendering ----

function renderStats(stats) {
  for (const status of ["queued", "pinning", "pinned", "failed"]) {
    $("pins-" + status).textContent = stats.pins ? stats.pins[status] : "–";
  }
  $("ingest").textContent = stats.ingest_per_sec;
  $("apply").textContent = stats.apply_per_sec;
  $("lag").textContent = stats.lag ? stats.lag.total_bytes : "–";
  $("dead-letters").textContent = stats.dead_letters;
  $("replicas").textContent = stats.replicas ? stats.replicas.pinned + " / " + stats.replicas.desired : "–";
  renderPartitions(stats.lag ? stats.lag.by_partition : []);
}

function nodeAction(label, method, path, question) {
  const button = el("button", label);
  button.dataset.action = label.toLowerCase();
  button.addEventListener("click", async () => {
    if (!confirm(question)) return;
    const result = await api(method, path);
    $("action-result").textContent = label + ": " + (result.status < 300 ? "done (" + result.status + ")" : failure(result));
  });
  return button;
}

function renderNode(node) {
  nodes.set(node.id, node);
  const body = $("nodes").tBodies[0];
  let row = body.querySelector(`tr[data-node="${CSS.escape(node.id)}"]`);
  if (!row) { row = el("tr"); row.dataset.node = node.id; body.appendChild(row); }
  const id = encodeURIComponent(node.id);
  const actions = el("td", null, "actions");
  if (node.state === "draining") {
    actions.append(nodeAction("Undrain", "POST", `/admin/nodes/${id}/undrain`, `Take node ${node.id} back?`));
  } else {
    actions.append(nodeAction("Drain", "POST", `/admin/nodes/${id}/drain`, `Drain node ${node.id}? Its replicas move to other nodes.`));
  }
  actions.append(nodeAction("Remove", "DELETE", `/admin/nodes/${id}`, `Remove node ${node.id}? (refused while it holds replicas)`));
  row.replaceChildren(
    el("td", node.id, "mono id"),
    el("td", node.region || "–"),
    el("td", node.state, "state state-" + node.state),
    el("td", node.reachable === null ? "–" : node.reachable ? "yes" : "no", "reachable"),
    el("td", bytes(node.free_bytes), "free"),
    el("td", node.queue === null ? "–" : node.queue, "queue"),
    el("td", node.error_rate === null || node.error_rate === undefined ? "–" : (node.error_rate * 100).toFixed(1) + " %"),
    el("td", node.error || "", "mono"),
    actions,
  );
}

function pinMatches(row) {
  const filter = $("filter").value.trim().toLowerCase();
  return !filter || row.textContent.toLowerCase().includes(filter);
}

function renderPin(pin) {
  const body = $("pins").tBodies[0];
  let row = body.querySelector(`tr[data-requestid="${CSS.escape(pin.requestid)}"]`);
  if (!row) { row = el("tr"); row.dataset.requestid = pin.requestid; }
  const retry = el("td");
  if (pin.status === "failed") {
    const button = el("button", "Retry");
    button.dataset.action = "retry";
    button.addEventListener("click", async () => {
      if (!confirm(`Retry the failed replicas of pin ${pin.requestid}?`)) return;
      const result = await api("POST", `/admin/pins/${encodeURIComponent(pin.requestid)}/recover`);
      $("action-result").textContent = "Retry: " + (result.status < 300 ? "requested" : failure(result));
    });
    retry.append(button);
  }
  row.replaceChildren(
    el("td", (pin.applied || "").replace("T", " ").replace(/\.\d+Z$/, "Z")),
    el("td", pin.requestid, "mono requestid"),
    el("td", pin.cid, "mono cid"),
    el("td", pin.owner),
    el("td", pin.status, "status status-" + pin.status),
    retry,
  );
  body.prepend(row);
  row.hidden = !pinMatches(row);
  while (body.rows.length > MAX_PIN_ROWS) body.deleteRow(body.rows.length - 1);
}

function logMatches(row) {
  const level = $("log-level").value;
  const node = $("log-node").value.trim().toLowerCase();
  return (!level || row.dataset.level === level) && (!node || (row.dataset.node || "").toLowerCase().includes(node));
}

function renderLog(line) {
  const body = $("logs").tBodies[0];
  const row = el("tr");
  row.dataset.level = line.level;
  row.dataset.node = line.node || "";
  const details = Object.entries(line.fields || {})
    .filter(([key]) => key !== "node")
    .map(([key, value]) => key + "=" + value)
    .join(" ");
  row.append(
    el("td", (line.time || "").replace("T", " ").replace(/\.\d+Z$/, "Z")),
    el("td", line.level, "level level-" + line.level),
    el("td", line.node || "", "mono node"),
    el("td", line.message, "message"),
    el("td", details, "mono"),
  );
  body.prepend(row);
  row.hidden = !logMatches(row);
  while (body.rows.length > MAX_LOG_ROWS) body.deleteRow(body.rows.length - 1);
}

// ---- charts (SVG polylines) ----

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2"];

function chart(svgId, series) {
  const svg = $(svgId);
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const all = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined).map(Number));
  const max = Math.max(1, ...all);
  const n = Math.max(2, limits.history_samples || 360);
  series.forEach((s, i) => {
    const points = [];
    const offset = n - s.values.length;
    s.values.forEach((v, j) => {
      if (v === null || v === undefined) return;
      const x = 30 + ((offset + j) / (n - 1)) * 365;
      const y = 110 - (Number(v) / max) * 100;
      points.push(x.toFixed(1) + "," + y.toFixed(1));
    });
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("stroke", COLORS[i % COLORS.length]);
    svg.append(line);
    // The latest point as a dot (a single sample draws no line).
    if (points.length) {
      const [x, y] = points[points.length - 1].split(",");
      const dot = document.createElementNS(ns, "circle");
      dot.setAttribute("cx", x); dot.setAttribute("cy", y); dot.setAttribute("r", 2.5);
      dot.setAttribute("fill", COLORS[i % COLORS.length]);
      svg.append(dot);
    }
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", 40 + i * 90); label.setAttribute("y", 9);
    label.setAttribute("fill", COLORS[i % COLORS.length]);
    label.textContent = s.name;
    svg.append(label);
  });
  const top = document.createElementNS(ns, "text");
  top.setAttribute("x", 0); top.setAttribute("y", 18); top.textContent = max >= 1e6 ? bytes(max) : String(Math.round(max * 10) / 10);
  svg.append(top);
  const axis = document.createElementNS(ns, "text");
  axis.setAttribute("x", 0); axis.setAttribute("y", 118); axis.textContent = "−1 h";
  svg.append(axis);
}

function renderCharts() {
  chart("chart-rates", [
    { name: "ingest", values: history.map((s) => s.ingest_per_sec) },
    { name: "apply", values: history.map((s) => s.apply_per_sec) },
  ]);
  chart("chart-lag", [{ name: "lag", values: history.map((s) => s.lag_bytes) }]);
  chart("chart-replicas", [
    { name: "desired", values: history.map((s) => s.replicas_desired) },
    { name: "pinned", values: history.map((s) => s.replicas_pinned) },
  ]);
  chart("chart-free", [...nodes.keys()].slice(0, 6).map((id) => ({
    name: id, values: history.map((s) => (s.free_bytes || {})[id]),
  })));
}

function renderPartitions(byPartition) {
  const svg = $("chart-partitions");
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const max = Math.max(1, ...byPartition.map((p) => p.bytes));
  const width = 365 / Math.max(1, byPartition.length);
  byPartition.forEach((p, i) => {
    const h = (p.bytes / max) * 100;
    const bar = document.createElementNS(ns, "rect");
    bar.setAttribute("x", 30 + i * width); bar.setAttribute("y", 110 - h);
    bar.setAttribute("width", Math.max(1, width - 1)); bar.setAttribute("height", Math.max(0.5, h));
    bar.setAttribute("fill", "#2563eb");
    const title = document.createElementNS(ns, "title");
    title.textContent = "partition " + p.partition + ": " + p.bytes + " bytes";
    bar.append(title);
    svg.append(bar);
  });
  const top = document.createElementNS(ns, "text");
  top.setAttribute("x", 0); top.setAttribute("y", 18); top.textContent = bytes(max);
  svg.append(top);
}

// ---- forms ----

async function showHistory(event) {
  event.preventDefault();
  const id = $("history-id").value.trim();
  const result = await api("GET", `/admin/pins/${encodeURIComponent(id)}/history?limit=100`);
  $("history").textContent = result.status === 200 ? JSON.stringify(result.body, null, 2) : failure(result);
}

async function addNode(event) {
  event.preventDefault();
  const node = { id: $("add-id").value.trim(), rpc_url: $("add-url").value.trim(), region: $("add-region").value.trim() };
  if (!confirm(`Add node ${node.id} at ${node.rpc_url}?`)) return;
  const response = await fetch("/admin/nodes", {
    method: "POST",
    headers: { Authorization: "Bearer " + token(), "Content-Type": "application/json" },
    body: JSON.stringify(node),
  });
  let body = null;
  try { body = await response.json(); } catch (_) { /* none */ }
  $("action-result").textContent = "Add node: " + (response.status < 300 ? "done" : failure({ status: response.status, body }));
}

async function revoke(event) {
  event.preventDefault();
  const id = $("revoke-id").value.trim();
  if (!confirm(`Revoke token ${id}? Every client using it stops working.`)) return;
  const result = await api("DELETE", `/admin/tokens/${encodeURIComponent(id)}`);
  $("action-result").textContent = "Revoke: " + (result.status < 300 ? "done" : failure(result));
}

$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", signOut);
$("history-form").addEventListener("submit", showHistory);
$("add-node").addEventListener("submit", addNode);
$("revoke-form").addEventListener("submit", revoke);
const refilterLogs = () => {
  for (const row of $("logs").tBodies[0].rows) row.hidden = !logMatches(row);
};
$("log-level").addEventListener("change", refilterLogs);
$("log-node").addEventListener("input", refilterLogs);
$("filter").addEventListener("input", () => {
  for (const row of $("pins").tBodies[0].rows) row.hidden = !pinMatches(row);
});
if (token()) start();
