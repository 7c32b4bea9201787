// CityEdge commissioning page: writing a point (the dialog: value, review, confirm, answer).
// Loaded after app.js, whose helpers ($, h, api, valueText, unitText) and session it uses.
"use strict";

// ---- writing a point ---------------------------------------------------------------------
let pending = null; // {device, point, info}

function openWrite(dev, d, p) {
  pending = { device: dev, point: p.point, info: p };
  const dlg = $("#write-dialog");
  $("#wd-target").textContent = `${dev} · ${p.point}`;
  $("#wd-current").textContent = `Now ${p.value !== undefined ? `${valueText(p.value)} ${unitText(p.unit)}`.trim() : "unknown"}${p.metric && p.metric !== p.point ? ` · ${p.metric}` : ""}${d.state !== "online" ? ` · the device is ${d.state}` : ""}`;
  const input = $("#wd-value");
  const select = $("#wd-select");
  const choices = p.type === "enum" ? p.labels : p.type === "bool" ? ["true", "false"] : null;
  input.hidden = !!choices;
  select.hidden = !choices;
  if (choices) {
    select.replaceChildren(...choices.map((c) => h("option", { value: c, selected: String(p.value) === c }, c)));
    $("#wd-hint").textContent = "";
  } else {
    input.value = p.value !== undefined ? String(p.value) : "";
    const lo = p.min ?? null, hi = p.max ?? null;
    $("#wd-hint").textContent = lo !== null || hi !== null ? `(${lo ?? "…"} to ${hi ?? "…"})` : "";
  }
  $("#wd-unit").textContent = choices ? "" : unitText(p.unit);
  step("edit");
  dlg.showModal();
  (choices ? select : input).focus();
}

function chosenValue() {
  const info = pending.info;
  if (info.type === "enum" || info.type === "bool") return $("#wd-select").value;
  return $("#wd-value").value.trim();
}

function step(which) {
  const edit = which === "edit";
  $("#wd-edit").hidden = !edit;
  $("#wd-confirm").hidden = which !== "confirm";
  $("#wd-next").hidden = !edit;
  $("#wd-back").hidden = which !== "confirm";
  $("#wd-write").hidden = which !== "confirm";
  $("#wd-cancel").hidden = which === "done";
  $("#wd-done").hidden = which !== "done";
  if (which !== "done") { $("#wd-result").textContent = ""; $("#wd-result").className = "result"; }
}

function review() {
  const v = chosenValue();
  const info = pending.info;
  if (v === "") { result("Enter a value.", false); return; }
  if (info.type === "number") {
    const n = Number(v);
    if (!Number.isFinite(n)) { result("Not a number.", false); return; }
    if (info.min !== undefined && n < info.min) { result(`Below the minimum ${info.min}.`, false); return; }
    if (info.max !== undefined && n > info.max) { result(`Above the maximum ${info.max}.`, false); return; }
  }
  const who = session.user ? ` It is recorded in the audit trail as ${session.user}.` : " It is recorded in the audit trail.";
  $("#wd-confirm").replaceChildren(
    h("div", {}, "Write ", h("b", {}, `${v} ${info.type === "number" ? unitText(info.unit) : ""}`.trim()), " to ", h("b", {}, `${pending.device} · ${pending.point}`), "?"),
    h("div", { class: "muted" }, `This changes the field device now.${who}`),
  );
  step("confirm");
  $("#wd-write").focus();
}

function result(text, ok) {
  const el = $("#wd-result");
  el.textContent = text;
  el.className = `result ${ok ? "ok" : "bad"}`;
}

async function send() {
  const btn = $("#wd-write");
  btn.disabled = true;
  const value = chosenValue();
  try {
    const { status, doc } = await api("/api/write", { device: pending.device, point: pending.point, value });
    if (status === 401) { $("#write-dialog").close(); showLogin("Your session ended: sign in again."); return; }
    step("done");
    if (doc.status === "ok") {
      const note = doc.requested !== undefined ? ` (asked ${doc.requested}: the register's resolution)` : "";
      result(`Written: ${pending.point} reads back ${valueText(doc.value)}${note}.`, true);
      toast(`${pending.device} · ${pending.point} = ${valueText(doc.value)}`);
    } else {
      result(`${doc.status || "error"}: ${doc.reason || doc.error || `HTTP ${status}`}`, false);
    }
  } catch (e) {
    step("done");
    result(`Not sent: ${e}`, false);
  } finally {
    btn.disabled = false;
  }
}

function toast(text) {
  const t = $("#toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}
