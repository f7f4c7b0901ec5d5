// wfdag console: plain JS, no build step.  Everything shown is set as text (never as HTML),
// so what a stage or an error says cannot run in the page.
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function duration(item) {
  if (!item.started_at) return "";
  const end = item.completed_at ? new Date(item.completed_at) : new Date();
  const seconds = (end - new Date(item.started_at)) / 1000;
  return seconds < 120 ? `${seconds.toFixed(1)} s` : `${(seconds / 60).toFixed(1)} min`;
}

// A button that asks first, then calls the API (`act`), then `reload`s the page's data.
function confirmed(label, action, question, act, reload, failed) {
  const button = el("button", label);
  button.type = "button";
  button.dataset.action = action;
  button.addEventListener("click", async () => {
    if (!window.confirm(question)) return;
    try {
      await act();
      await reload();
    } catch (error) {
      failed(error);
    }
  });
  return button;
}

function ms(value) {
  return value === null || value === undefined ? "" : `${Math.round(value)} ms`;
}

function live(url, onEvent) {
  const status = document.getElementById("live");
  const source = new EventSource(url);
  source.onopen = () => { status.textContent = "live"; };
  source.onerror = () => { status.textContent = "reconnecting…"; };
  source.onmessage = (message) => onEvent(JSON.parse(message.data));
  return source;
}

// A small bar chart drawn as SVG elements (labels set as text).
function bars(values, labels, { width = 360, height = 120, unit = "", sparse = false } = {}) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height + 30));
  svg.setAttribute("class", "chart");
  const top = Math.max(1, ...values);
  const step = width / Math.max(1, values.length);
  values.forEach((value, k) => {
    const h = (value / top) * height;
    const rect = document.createElementNS(NS, "rect");
    rect.setAttribute("x", String(k * step + 2));
    rect.setAttribute("y", String(height - h));
    rect.setAttribute("width", String(Math.max(1, step - 4)));
    rect.setAttribute("height", String(h));
    rect.setAttribute("fill", "#7aa2d6");
    const tip = document.createElementNS(NS, "title");
    tip.textContent = `${labels[k]}: ${value}${unit}`;
    rect.append(tip);
    const text = document.createElementNS(NS, "text");
    text.setAttribute("x", String(k * step + step / 2));
    text.setAttribute("y", String(height + 14));
    text.setAttribute("font-size", "10");
    text.setAttribute("text-anchor", "middle");
    text.textContent = !sparse || k === 0 || k === values.length - 1 ? labels[k] : "";
    svg.append(rect, text);
  });
  return svg;
}

// --- the list of executions -------------------------------------------------------------
function listPage() {
  const form = document.getElementById("filters");
  const body = document.querySelector("#executions tbody");
  const more = document.getElementById("more");
  let cursor = null;
  let timer = null;

  function query(withCursor) {
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (value) params.set(key, value);
    params.set("limit", "50");
    if (withCursor && cursor) params.set("cursor", cursor);
    return `/api/executions?${params}`;
  }

  function row(item) {
    const tr = el("tr");
    tr.dataset.id = item.execution_id;
    tr.append(el("td", item.started_at ? new Date(item.started_at).toLocaleString() : ""));
    const link = el("a", item.execution_id);
    link.href = `/executions/${encodeURIComponent(item.execution_id)}`;
    const cell = el("td");
    cell.append(link);
    tr.append(cell, el("td", item.workflow_id));
    const status = el("td");
    status.append(el("span", item.status, `status ${item.status}`));
    tr.append(status, el("td", item.current_stage || ""), el("td", duration(item)),
              el("td", item.organization_id || ""));
    return tr;
  }

  async function load(append) {
    const page = await getJSON(query(append));
    if (!append) body.replaceChildren();
    for (const item of page.items) body.append(row(item));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    document.getElementById("count").textContent = `${body.children.length} shown`;
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); load(false); });
  more.addEventListener("click", () => load(true));
  live("/api/stream", () => {
    clearTimeout(timer);
    timer = setTimeout(() => load(false), 150);  // a burst of appends is one refresh
  });
  load(false).catch((error) => body.replaceChildren(el("tr", error.message, "error")));
}

// --- one execution ----------------------------------------------------------------------
function executionPage() {
  const eid = decodeURIComponent(location.pathname.split("/").pop());
  const slider = document.getElementById("slider");
  const base = `/api/executions/${encodeURIComponent(eid)}`;
  let last = 1;
  let following = true;  // the slider sits at the newest event: follow the log live

  function action(label, path, body, question) {
    return confirmed(label, path, question, () => post(`${base}/${path}`, body()), load,
                     (error) => document.getElementById("actions").append(
                       el("p", error.message, "error")));
  }

  function renderActions(data) {
    const box = document.getElementById("actions");
    box.replaceChildren();
    const status = data.status.status;
    for (const stage of data.waiting_approvals) {
      box.append(action(`approve ${stage}`, "approve", () => ({ stage }),
                        `Approve stage ${stage}?`));
      box.append(action(`reject ${stage}`, "reject",
                        () => ({ stage, reason: window.prompt("Why?") || "rejected" }),
                        `Reject stage ${stage}? It fails for good.`));
    }
    for (const name of data.waiting_signals) {
      box.append(action(`signal ${name}`, "signal", () => ({ name }),
                        `Send signal ${name}?`));
    }
    const ended = ["completed", "failed", "rolled_back", "cancelled"].includes(status);
    if (!ended) box.append(action("cancel", "cancel", () => ({}), "Cancel this execution?"));
    if (status === "completed" || status === "failed") {
      box.append(action("roll back", "rollback", () => ({}), "Roll back its stages?"));
    }
    if (status === "failed" || status === "rolled_back") {
      box.append(action("retry", "retry", () => ({}), "Start it again?"));
    }
  }

  function renderAt(data) {
    const body = document.querySelector("#stages tbody");
    body.replaceChildren();
    for (const stage of data.stages) {
      const tr = el("tr");
      tr.dataset.stage = stage.id;
      const state = el("td");
      state.append(el("span", stage.status, `status ${stage.status}`));
      const said = el("td", stage.error || stage.output || "", stage.error ? "error" : "said");
      tr.append(el("td", stage.name), el("td", stage.kind), state, el("td", stage.attempts),
                el("td", stage.inputs || "", "inputs"), said);
      body.append(tr);
    }
    const timed = data.stages.filter((stage) => stage.duration_ms !== null);
    document.getElementById("durations").replaceChildren(
      bars(timed.map((stage) => stage.duration_ms), timed.map((stage) => stage.id),
           { unit: " ms" }));
    document.getElementById("asof").textContent =
      `as of event ${data.at.last_seq} of ${last}: ${data.at.status}`;
    document.getElementById("graph").src = `${base}/graph.svg?seq=${data.at.last_seq}`;
  }

  async function load() {
    const data = await getJSON(base);
    last = data.events.length;
    document.getElementById("title").textContent = `${data.status.workflow_id} · ${eid}`;
    const summary = document.getElementById("summary");
    summary.replaceChildren(el("span", data.status.status, `status ${data.status.status}`),
                            el("span", ` started ${data.status.started_at || ""}`),
                            el("p", data.status.error_message || "", "error"));
    slider.max = String(last);
    if (following) slider.value = String(last);
    renderActions(data);
    const events = document.querySelector("#events tbody");
    events.replaceChildren();
    for (const e of data.events) {
      const tr = el("tr");
      const wait = e.retry_delay_ms !== null && e.retry_delay_ms !== undefined
        ? `${e.retry_delay_ms} ms` : (e.type === "stage_deferred" ? `until ${e.retry_at}` : "");
      tr.append(el("td", e.seq), el("td", e.at), el("td", e.type), el("td", e.stage_id || ""),
                el("td", e.attempt || ""), el("td", ms(e.duration_ms)), el("td", wait),
                el("td", e.breaker || ""), el("td", e.error || "", "error"));
      events.append(tr);
    }
    if (following) renderAt(data);
    else await travel();
  }

  async function travel() {
    renderAt(await getJSON(`${base}?seq=${slider.value}`));
  }

  slider.addEventListener("input", () => {
    following = Number(slider.value) >= last;
    travel();
  });
  document.getElementById("now").addEventListener("click", () => {
    following = true;
    load();
  });
  let timer = null;
  live(`/api/stream?execution=${encodeURIComponent(eid)}`, () => {
    clearTimeout(timer);
    timer = setTimeout(load, 100);
  });
  load().catch((error) => {
    document.getElementById("summary").replaceChildren(el("p", error.message, "error"));
  });
}

// --- workflows, breakers, schedules ----------------------------------------------------
function operationsPage() {
  const problem = document.getElementById("problem");

  function button(label, action, url, question) {
    return confirmed(label, action, question, () => post(url), load,
                     (error) => { problem.textContent = error.message; });
  }

  async function load() {
    const [workflows, breakers, schedules] = await Promise.all([
      getJSON("/api/workflows"), getJSON("/api/breakers"), getJSON("/api/schedules")]);
    const wbody = document.querySelector("#workflows tbody");
    wbody.replaceChildren();
    for (const w of workflows.items) {
      const m = w.metrics;
      const stages = Object.entries(m.stages || {}).map(
        ([id, s]) => `${id}: ${s.runs}/${s.retries}/${s.failures}/${ms(s.p95_duration_ms)}`);
      const link = el("a", "graph");
      link.href = `/api/workflows/${encodeURIComponent(w.id)}/graph.svg`;
      const cell = el("td");
      cell.append(link);
      const hist = el("td");
      const h = w.histogram;
      if (h.counts.length) {
        hist.append(bars(h.counts, h.edges_ms.slice(0, -1).map((e) => `${Math.round(e)}`),
                         { width: 220, height: 50, unit: " runs", sparse: true }));
      }
      const tr = el("tr");
      tr.dataset.workflow = w.id;
      tr.append(el("td", w.id), el("td", w.version), el("td", w.stages), el("td", m.total),
                el("td", m.success_rate === null ? "unknown" : `${(m.success_rate * 100).toFixed(1)} %`),
                el("td", ms(m.p95_duration_ms)), el("td", stages.join(" · ")), hist, cell);
      wbody.append(tr);
    }
    const bbody = document.querySelector("#breakers tbody");
    bbody.replaceChildren();
    for (const b of breakers.items) {
      const tr = el("tr");
      tr.dataset.breaker = `${b.workflow_id}:${b.stage_id}`;
      const state = el("td");
      state.append(el("span", b.state, `status ${b.state}`));
      const act = el("td");
      act.append(button("reset", "reset",
        `/api/breakers/${encodeURIComponent(b.workflow_id)}/${encodeURIComponent(b.stage_id)}/reset`,
        `Reset breaker ${b.workflow_id}:${b.stage_id}?`));
      tr.append(el("td", `${b.workflow_id}:${b.stage_id}`), el("td", b.organization_id || "-"),
                state, el("td", `${b.failure_count}/${b.failure_threshold}`),
                el("td", b.next_attempt_at || ""), act);
      bbody.append(tr);
    }
    const sbody = document.querySelector("#schedules tbody");
    sbody.replaceChildren();
    for (const s of schedules.items) {
      const base = `/api/schedules/${encodeURIComponent(s.schedule_id)}`;
      const act = el("td");
      act.append(s.paused ? button("resume", "resume", `${base}/resume`, `Resume ${s.schedule_id}?`)
                          : button("pause", "pause", `${base}/pause`, `Pause ${s.schedule_id}?`),
                 button("trigger", "trigger", `${base}/trigger`, `Run ${s.schedule_id} now?`));
      const tr = el("tr");
      tr.dataset.schedule = s.schedule_id;
      tr.append(el("td", s.schedule_id), el("td", s.workflow_id), el("td", `${s.cron} (${s.timezone})`),
                el("td", s.paused ? "paused" : "active"), el("td", s.next_fire_at), el("td", s.fires), act);
      sbody.append(tr);
    }
  }

  load().catch((error) => { problem.textContent = error.message; });
}

const PAGES = { list: listPage, execution: executionPage, operations: operationsPage };
PAGES[document.body.dataset.page]();
