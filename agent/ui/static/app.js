// CityEdge commissioning page. Plain JS, no framework, nothing loaded from the network.
// Everything shown comes from the page's own server (/api/events: server-sent events). Text is
// always set with textContent, never parsed as HTML: device names and log messages are data.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const STATES = ["online", "degraded", "offline", "unknown"];
const SINKS = { JsonLinesSink: "JSON lines", MqttSink: "MQTT" };
const UNITS = { "1": "", deg: "°", Cel: "°C", "kW.h": "kWh", "W.h": "Wh", m3: "m³", "m3/h": "m³/h" };

let session = null; // {login, user, csrf, interval}
let snap = null; // the latest snapshot
let plan = null; // the read plan
let meta = {}; // per device: kind, bus, profile, interval, points' descriptions (per config)
let devs = {}; // the snapshot's devices with their descriptions merged in
let stream = null;
let lastEvent = 0;
let filter = "all";
const collapsed = new Set();
const expanded = new Set();

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v; // CSSOM: allowed by the page's CSP
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// ---- formatting ------------------------------------------------------------------------
function unitText(u) {
  if (u === null || u === undefined) return "";
  return u in UNITS ? UNITS[u] : u;
}
function valueText(v) {
  if (v === null || v === undefined) return "–";
  if (Array.isArray(v)) return v.length ? v.join(", ") : "none";
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "number") return Number.isInteger(v) ? v.toLocaleString("en-US") : String(v);
  return String(v);
}
function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  const s = Math.max(0, seconds);
  if (s < 1) return "just now";
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}
function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
}
function since(iso) {
  if (!iso) return null;
  return (Date.now() - Date.parse(iso)) / 1000;
}
function clock(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}
function bytes(n) {
  if (n === null || n === undefined) return "–";
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1073741824) return `${(n / 1048576).toFixed(1)} MiB`;
  return `${(n / 1073741824).toFixed(1)} GiB`;
}
function pct(x) {
  return x === null || x === undefined ? "–" : `${(x * 100).toFixed(x < 0.1 ? 1 : 0)}\u00a0%`;
}
function stateOf(d) {
  return d.state || (d.online ? "online" : "unknown");
}

// ---- server --------------------------------------------------------------------------------
async function api(path, body) {
  const opts = { credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    if (session && session.csrf) opts.headers["X-CSRF-Token"] = session.csrf;
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  let doc = {};
  try { doc = await res.json(); } catch (e) { doc = { error: `HTTP ${res.status}` }; }
  return { status: res.status, doc };
}

async function start() {
  const { doc } = await api("/api/session");
  session = doc;
  if (session.login && !session.user) return showLogin();
  showDash();
}

function showLogin(message) {
  if (stream) { stream.close(); stream = null; }
  $("#dash").hidden = true;
  $("#tabs").hidden = true;
  $("#logout").hidden = true;
  $("#who").textContent = "";
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  setLive("off", "signed out");
  $("#login-user").focus();
}

function showDash() {
  $("#login").hidden = true;
  $("#dash").hidden = false;
  $("#tabs").hidden = false;
  $("#who").textContent = session.user ? `signed in as ${session.user}` : "no login (loopback)";
  $("#logout").hidden = !session.login;
  openStream();
}

function openStream() {
  if (stream) stream.close();
  stream = new EventSource("/api/events");
  stream.addEventListener("snapshot", (e) => {
    lastEvent = Date.now();
    const doc = JSON.parse(e.data);
    if (doc.agent && doc.agent.reachable) snap = doc; // else keep showing the last good one
    render(doc.agent || {});
  });
  stream.addEventListener("devices", (e) => {
    meta = JSON.parse(e.data).devices;
    if (snap) render({ reachable: true });
  });
  stream.addEventListener("plan", (e) => {
    plan = JSON.parse(e.data);
    if (snap) renderBuses();
  });
  stream.addEventListener("logout", () => showLogin("Your session ended: sign in again."));
  stream.onerror = async () => {
    setLive("off", "reconnecting");
    if (stream && stream.readyState === EventSource.CLOSED) {
      const { doc } = await api("/api/session").catch(() => ({ doc: null }));
      if (doc && doc.login && !doc.user) showLogin("Your session ended: sign in again.");
      else setTimeout(openStream, 2000);
    }
  };
}

function setLive(kind, text, time) {
  $("#live").className = `live ${kind}`;
  $("#live-text").textContent = text;
  $("#live-time").textContent = time ? ` · ${time}` : "";
}

setInterval(() => {
  if (!stream || !lastEvent) return;
  const late = (Date.now() - lastEvent) / 1000;
  const limit = 3 * ((session && session.interval) || 1) + 2;
  if (late > limit) setLive("stale", `no update for ${Math.round(late)} s`);
}, 1000);

// ---- rendering -----------------------------------------------------------------------------
function render(agent) {
  const banner = $("#banner");
  if (!agent.reachable) {
    banner.hidden = false;
    banner.textContent = `Agent not reachable: ${agent.error}. Retrying every ${session.interval} s${snap ? "; the values below are the last ones seen" : ""}.`;
    setLive("off", "agent unreachable");
    return;
  }
  banner.hidden = true;
  devs = merged();
  setLive("on", "live", clock(snap.time));
  $("#gw").textContent = snap.gateway;
  document.title = `${snap.gateway} · CityEdge`;
  renderSummary();
  renderFilters();
  renderDevices();
  renderUplink();
  renderBuses();
  renderWarnings();
  $("#foot").textContent = `Gateway ${snap.gateway} · up ${duration(snap.uptimeS)} · ${snap.readingsRead.toLocaleString("en-US")} readings read, ${snap.readingsDelivered.toLocaleString("en-US")} delivered`;
}

function merged() {
  const out = {};
  for (const [id, live] of Object.entries(snap.devices)) {
    const m = meta[id];
    if (!m) { out[id] = live; continue; }
    const values = {};
    for (const p of live.points || []) values[p.point] = p;
    out[id] = { ...m, ...live, points: m.points.map((p) => ({ ...p, ...(values[p.point] || {}) })) };
  }
  return out;
}

function stat(label, big, sub, tone) {
  return h("div", { class: `stat ${tone || ""}` }, h("div", { class: "label" }, label), h("div", { class: "big" }, big), h("div", { class: "sub" }, sub));
}

function counts() {
  const n = { online: 0, degraded: 0, offline: 0, unknown: 0 };
  for (const d of Object.values(devs)) n[stateOf(d)] = (n[stateOf(d)] || 0) + 1;
  return n;
}

function renderSummary() {
  const n = counts();
  const total = Object.keys(devs).length;
  const devTone = n.offline ? "bad" : n.degraded ? "warn" : "ok";
  const mqtt = snap.sinks.filter((s) => s.connected !== undefined);
  const down = mqtt.filter((s) => !s.connected);
  const depth = snap.sinks.reduce((a, s) => a + ((s.outbox && s.outbox.depth) || 0), 0);
  const oldest = Math.max(0, ...snap.sinks.map((s) => (s.outbox && s.outbox.oldestAgeS) || 0));
  const warns = (snap.warnings || []).length;
  const errors = (snap.warnings || []).filter((w) => w.level !== "WARNING").length;
  $("#summary").replaceChildren(
    stat("Devices answering", `${n.online + n.degraded} / ${total}`, n.offline || n.degraded ? `${n.offline} offline · ${n.degraded} degraded` : "all online", devTone),
    stat("Uplink", mqtt.length ? (down.length ? `${down.length} link down` : "connected") : "local output", depth ? `${depth.toLocaleString("en-US")} waiting · oldest ${duration(oldest)}` : "outbox empty", down.length ? "bad" : depth > 1000 ? "warn" : "ok"),
    stat("Buses", `${snap.buses.filter((b) => b.connected).length} / ${snap.buses.length} open`, snap.buses.map((b) => `${b.id} ${pct(b.load)}`).join(" · "), snap.buses.some((b) => b.connected === false) ? "bad" : "ok"),
    stat("Warnings", warns ? `${warns}` : "none", errors ? `${errors} errors` : "since the agent started", errors ? "bad" : warns ? "warn" : "ok"),
  );
  const wc = $("#warn-count");
  wc.hidden = !warns;
  wc.textContent = String(warns);
}

function renderFilters() {
  const n = counts();
  const mk = (key, label) => h("button", { type: "button", class: filter === key ? "active" : "", "aria-pressed": filter === key ? "true" : "false", onclick: () => { filter = key; renderFilters(); renderDevices(); } }, label);
  const total = Object.keys(devs).length;
  const items = [mk("all", `All ${total}`)];
  if (n.offline) items.push(mk("offline", `Offline ${n.offline}`));
  if (n.degraded) items.push(mk("degraded", `Degraded ${n.degraded}`));
  if (filter !== "all" && !n[filter]) filter = "all";
  $("#filters").replaceChildren(...items);
}

function isCollapsed(id, state) {
  if (collapsed.has(id)) return true;
  if (expanded.has(id)) return false;
  const many = window.matchMedia("(max-width: 720px)").matches ? 3 : 8;
  return Object.keys(devs).length > many && state === "online";
}

function renderDevices() {
  const ids = Object.keys(devs).sort((a, b) => {
    const order = (x) => ({ offline: 0, degraded: 1, unknown: 2, online: 3 })[stateOf(devs[x])];
    return order(a) - order(b) || a.localeCompare(b, undefined, { numeric: true });
  });
  const cards = ids.filter((id) => filter === "all" || stateOf(devs[id]) === filter).map((id) => deviceCard(id, devs[id]));
  $("#device-list").replaceChildren(...(cards.length ? cards : [h("p", { class: "empty" }, "No devices.")]));
}

function deviceCard(id, d) {
  const state = stateOf(d);
  const shut = isCollapsed(id, state);
  const forS = since(d.since);
  const why = d.reason ? `${d.reason}${d.detail ? `: ${d.detail}` : ""}` : null;
  const head = h(
    "div",
    { class: "dev-head", role: "button", tabindex: "0", "aria-expanded": shut ? "false" : "true", onclick: () => toggle(id, shut), onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(id, shut); } } },
    h("div", { class: "dev-name" }, h("span", { class: "chev" }, "▼"), id),
    h("span", { class: `pill state ${state}`, title: d.since ? `since ${d.since}` : "" }, state),
    h("div", { class: "dev-meta" }, `${(d.kind || "").replace("_", " ")} · bus ${d.bus} · ${d.profile} · every ${d.interval} s`, forS !== null ? ` · ${state} for ${duration(forS)}` : ""),
    why ? h("div", { class: "dev-why" }, why) : null,
  );
  const points = h("ul", { class: "points" }, (d.points || []).map((p) => pointRow(id, d, p)));
  const foot = h(
    "div",
    { class: "dev-foot" },
    `last good poll ${ago(d.lastSuccessAgeS)} · ${d.polls ?? 0} polls · ${d.timeouts ?? 0} timeouts · ${d.exceptions ?? 0} exceptions · ${d.badFrames ?? 0} bad frames`,
    ...(d.excluded || []).map((x) => h("div", {}, `excluded: ${x.what} (${x.reason}), asked again in ${duration(x.retryInS)}`)),
  );
  return h("article", { class: `device ${state}${shut ? " collapsed" : ""}`, dataset: { device: id, state } }, head, points, foot);
}

function toggle(id, wasShut) {
  if (wasShut) { collapsed.delete(id); expanded.add(id); } else { expanded.delete(id); collapsed.add(id); }
  renderDevices();
}

function pointRow(dev, d, p) {
  const q = p.quality || "none";
  const has = p.value !== undefined;
  const unit = unitText(p.unit);
  const val = h("div", { class: "pt-val" }, h("span", { class: "v" }, has ? valueText(p.value) : "–"), unit && has ? h("span", { class: "u" }, unit) : null, h("small", {}, has ? ago(p.ageS) : "not read yet"));
  const quality = has && q !== "good" ? h("span", { class: `pill pt-q ${q}`, title: p.reason || "" }, p.reason ? `${q}: ${p.reason}` : q) : null;
  const act = p.writable ? h("button", { type: "button", class: "small write", dataset: { device: dev, point: p.point }, onclick: () => openWrite(dev, d, p) }, "Write") : null;
  return h(
    "li",
    { class: `pt ${q}`, dataset: { point: p.point } },
    h("div", { class: "pt-name" }, h("b", {}, p.point), p.metric && p.metric !== p.point ? h("small", {}, p.metric) : p.description ? h("small", {}, p.description) : null, quality),
    val,
    h("div", { class: "pt-act" }, act),
  );
}

function renderUplink() {
  const blocks = snap.sinks.map((s) => {
    const ob = s.outbox;
    const link = s.connected === undefined ? h("span", { class: "pill idle" }, "local") : h("span", { class: `pill ${s.connected ? "ok" : "bad"}` }, s.connected ? "connected" : "disconnected");
    const rows = [];
    if (ob) {
      rows.push(["waiting", `${(ob.depth || 0).toLocaleString("en-US")} readings`]);
      rows.push(["oldest", ob.oldestAgeS ? duration(ob.oldestAgeS) : "–"]);
      rows.push(["dropped", `${ob.drops || 0}`]);
      rows.push(["file", ob.budgetBytes ? `${bytes(ob.bytes)} of ${bytes(ob.budgetBytes)}` : bytes(ob.bytes)]);
      if (ob.inMemory) rows.push(["in memory", `${ob.inMemory}`]);
    }
    const share = ob && ob.budgetBytes ? Math.min(1, (ob.bytes || 0) / ob.budgetBytes) : null;
    return h(
      "div",
      { class: "block", dataset: { sink: s.name } },
      h("div", { class: "block-head" }, h("b", {}, `${s.name}`), link),
      h("div", { class: "muted" }, SINKS[s.type] || s.type),
      rows.length ? h("dl", { class: "kv" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])) : null,
      share !== null ? h("div", { class: `bar ${share > 0.9 ? "bad" : share > 0.6 ? "warn" : ""}`, title: `outbox budget ${pct(share)} used` }, h("i", { style: `width:${(share * 100).toFixed(1)}%` })) : null,
      ob && ob.fault ? h("div", { class: "alarm bad" }, `failing: ${ob.fault}`) : null,
      ...((ob && ob.alarms) || []).map((a) => h("div", { class: "alarm" }, a)),
    );
  });
  const c = snap.commands;
  if (c) {
    blocks.push(
      h("div", { class: "block" }, h("div", { class: "block-head" }, h("b", {}, "Commands"), c.storeDegraded ? h("span", { class: "pill warn" }, "not durable") : null),
        h("dl", { class: "kv" }, ["ok", "rejected", "failed", "timeout"].flatMap((k) => [h("dt", {}, k), h("dd", {}, String(c[k] || 0))]))),
    );
  }
  $("#uplink-body").replaceChildren(...blocks);
}

function renderBuses() {
  const plans = {};
  for (const b of (plan && plan.buses) || []) plans[b.id] = b;
  const blocks = snap.buses.map((b) => {
    const p = plans[b.id];
    const link = b.connected === undefined ? h("span", { class: "pill idle" }, "no devices") : h("span", { class: `pill ${b.connected ? "ok" : "bad"}`, title: b.linkError || "" }, b.connected ? "open" : "closed");
    const load = b.load;
    const rows = [["endpoint", h("span", { class: "mono" }, b.endpoint)], ["protocol", b.protocol], ["devices", String(b.devices.length)], ["measured load", pct(load)]];
    if (p && p.line) rows.push(["line", p.line]);
    if (p && p.plannedLoad !== null && p.plannedLoad !== undefined) rows.push(["planned wire time", pct(p.plannedLoad)]);
    if (b.requests !== undefined) rows.push(["requests", b.requests.toLocaleString("en-US")]);
    if (b.reconnects) rows.push(["reconnects", String(b.reconnects)]);
    return h(
      "div",
      { class: "block", dataset: { bus: b.id } },
      h("div", { class: "block-head" }, h("b", {}, b.id), link),
      b.linkError && !b.connected ? h("div", { class: "alarm bad" }, `${b.linkError}${b.retryInS ? ` (retry in ${b.retryInS} s)` : ""}`) : null,
      h("dl", { class: "kv" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      load !== null && load !== undefined ? h("div", { class: `bar ${load > 0.7 ? "bad" : load > 0.5 ? "warn" : ""}`, title: `bus busy ${pct(load)} of the time` }, h("i", { style: `width:${Math.min(100, load * 100).toFixed(1)}%` })) : null,
      p ? planDetails(p) : null,
    );
  });
  $("#bus-body").replaceChildren(...(blocks.length ? blocks : [h("p", { class: "empty" }, "No buses.")]));
}

function planDetails(p) {
  const open = new Set(JSON.parse(sessionStorage.getItem("openPlans") || "[]"));
  const rows = p.devices.map((d) => {
    if (d.note || d.error) return h("div", { class: "plan-dev" }, h("b", {}, d.id), " ", h("span", { class: d.error ? "error" : "muted" }, d.error || d.note));
    const reqs = d.groups.reduce((a, g) => a + g.requests.length, 0);
    return h(
      "div",
      { class: "plan-dev" },
      h("b", {}, d.id), h("span", { class: "muted" }, ` unit ${d.unit} · ${d.points} points in ${reqs} request${reqs === 1 ? "" : "s"}`),
      ...d.groups.map((g) => h("div", {},
        h("div", { class: "muted" }, `every ${g.interval} s${g.wireS ? ` · ${(g.wireS * 1000).toFixed(1)} ms on the wire` : ""}`),
        h("table", { class: "req" }, h("thead", {}, h("tr", {}, h("th", {}, "FC"), h("th", {}, "table"), h("th", {}, "start"), h("th", {}, "count"), h("th", {}, "points"))),
          h("tbody", {}, g.requests.map((r) => h("tr", {}, h("td", { class: "n" }, r.fc), h("td", {}, r.table), h("td", { class: "n" }, r.start), h("td", { class: "n" }, r.count), h("td", {}, r.points.join(", ")))))),
      )),
    );
  });
  const det = h("details", { class: "plan", open: open.has(p.id) }, h("summary", {}, `Read plan (${p.devices.length} device${p.devices.length === 1 ? "" : "s"})`), ...rows);
  det.addEventListener("toggle", () => {
    const now = new Set(JSON.parse(sessionStorage.getItem("openPlans") || "[]"));
    if (det.open) now.add(p.id); else now.delete(p.id);
    sessionStorage.setItem("openPlans", JSON.stringify([...now]));
  });
  return det;
}

function renderWarnings() {
  const ws = snap.warnings || [];
  if (!ws.length) {
    $("#warn-body").replaceChildren(h("p", { class: "empty" }, "No warnings since the agent started."));
    return;
  }
  const items = ws.map((w) => h(
    "li",
    { class: w.level.toLowerCase() },
    h("div", { class: "when" }, h("span", { class: `pill ${w.level === "WARNING" ? "warn" : "bad"}` }, w.level.toLowerCase()), h("span", { title: w.time }, `${clock(w.time)} · ${ago(since(w.time))}`), w.count > 1 ? h("span", {}, `×${w.count} since ${clock(w.first)}`) : null, h("span", { class: "mono" }, w.logger)),
    h("div", { class: "msg" }, w.message),
  ));
  $("#warn-body").replaceChildren(h("ul", { class: "warn-list" }, items));
}

// ---- wiring -------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("#wd-next").addEventListener("click", review);
  $("#wd-back").addEventListener("click", () => step("edit"));
  $("#wd-write").addEventListener("click", send);
  $("#wd-cancel").addEventListener("click", () => { pending = null; $("#write-dialog").close(); });
  $("#wd-done").addEventListener("click", () => $("#write-dialog").close());
  $("#write-form").addEventListener("submit", (e) => { e.preventDefault(); if (!$("#wd-edit").hidden) review(); });
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("#login-submit").disabled = true;
    const { status, doc } = await api("/api/login", { user: $("#login-user").value, password: $("#login-password").value });
    $("#login-submit").disabled = false;
    if (status === 200) {
      session = { ...session, user: doc.user, csrf: doc.csrf };
      $("#login-password").value = "";
      showDash();
    } else {
      $("#login-error").textContent = doc.error || `HTTP ${status}`;
    }
  });
  $("#logout").addEventListener("click", async () => {
    await api("/api/logout", {});
    session = { ...session, user: null, csrf: null };
    showLogin("Signed out.");
  });
  start().catch((e) => {
    const b = $("#banner");
    b.hidden = false;
    b.textContent = `Cannot reach this page's server: ${e}`;
  });
});
