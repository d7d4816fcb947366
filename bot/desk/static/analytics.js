// Parley analytics: one section per chart (bot/analytics.py defines each number), drawn
// with Chart.js (vendored: chart.umd.js), beside an accessible table of the same numbers
// and a CSV download. Text from the database is set with textContent, never as HTML.
"use strict";

const an = { me: null, meta: null, drawn: {}, query: "" };
const EDITOR_ROLES = ["writer", "admin"];

// How each chart is drawn from its rows: the column on the category axis (`x`), the
// columns drawn as series, and how. `timeline`: the categories are the range's buckets.
const SPECS = {
  volume: { type: "line", x: "bucket", timeline: true, perChannel: ["inbound", "outbound"] },
  handled: { type: "bar", x: "bucket", timeline: true, stacked: true, series: ["handled", "not_handled"] },
  containment: { type: "bar", x: "channel", stacked: true, series: ["contained", "handed_off"] },
  handoff_reasons: { type: "bar", x: "reason", series: ["handoffs"] },
  handoff_intents: { type: "bar", x: "intent", horizontal: true, series: ["handoffs"] },
  first_answer: { type: "line", x: "bucket", timeline: true, series: ["bot_median", "person_median"] },
  agents: { type: "bar", x: "agent", series: ["queue_median", "first_answer_median", "handle_median"] },
  teams: { type: "bar", x: "team", series: ["queue_median", "first_answer_median", "handle_median"] },
  satisfaction: { type: "bar", x: "handled_by", series: ["answer_mean", "time_mean", "agent_mean"], max: 5 },
  satisfaction_agents: { type: "bar", x: "agent", series: ["answer_mean", "time_mean", "agent_mean"], max: 5 },
  canned: { type: "bar", x: "reply", horizontal: true, stacked: true, series: ["by_bot", "by_agents"] },
  canned_handoffs: { type: "bar", x: "reply", horizontal: true, series: ["followed_by_handoff"] },
};

function duration(seconds) {
  if (seconds < 60) return (Math.round(seconds * 10) / 10) + " s";
  const s = Math.round(seconds);
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m " + (s % 60) + "s";
  const h = Math.floor(m / 60);
  return h < 48 ? h + "h " + (m % 60) + "m" : Math.floor(h / 24) + "d " + (h % 24) + "h";
}

function shown(kind, value) {
  if (value === null || value === undefined) return "–";
  if (kind === "seconds") return duration(value);
  if (kind === "share") return (Math.round(value * 1000) / 10) + "%";
  if (kind === "score") return value.toFixed(2);
  return String(value);
}

// --- filters ---------------------------------------------------------------------------

function checkboxes(fieldset, name, options, ticked) {
  for (const o of options) {
    const box = el("input");
    box.type = "checkbox";
    box.name = name;
    box.value = o.name;
    box.checked = ticked.includes(o.name);
    const label = el("label", null, "tick");
    label.append(box, document.createTextNode(" " + o.label));
    fieldset.appendChild(label);
  }
}

function formQuery() {
  const params = new URLSearchParams();
  params.set("from", $("from").value);
  params.set("to", $("to").value);
  for (const name of ["channel", "language"]) {
    const ticked = [...document.querySelectorAll("input[name=" + name + "]:checked")].map((b) => b.value);
    if (ticked.length) params.set(name, ticked.join(","));
  }
  return params.toString();
}

function showError(text) {
  $("filter-error").textContent = text || "";
  $("filter-error").hidden = !text;
}

// --- one chart ---------------------------------------------------------------------------

function section(chart) {
  const box = el("section", null, "chart");
  box.id = "chart-" + chart.name;
  box.dataset.chart = chart.name;
  box.setAttribute("aria-labelledby", "title-" + chart.name);
  const title = el("h2", chart.title);
  title.id = "title-" + chart.name;
  const canvas = el("canvas");
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", chart.title + ": a chart of the table below");
  const frame = el("div", null, "frame");
  frame.appendChild(canvas);
  const csv = el("a", "Download CSV", "csv");
  csv.setAttribute("download", "");
  const table = el("table", null, "numbers");
  table.appendChild(el("caption", chart.title));
  // Long tables scroll in their own box, which the keyboard can reach.
  const scroller = el("div", null, "table-box");
  scroller.tabIndex = 0;
  scroller.setAttribute("role", "region");
  scroller.setAttribute("aria-label", chart.title + " (table)");
  scroller.appendChild(table);
  box.append(title, el("p", chart.about, "about"), el("p", null, "extra"), frame, csv, scroller);
  return box;
}

function cell(column, row, first) {
  const value = row[column.key];
  const node = el(first ? "th" : "td");
  if (first) node.setAttribute("scope", "row");
  node.dataset.key = column.key;
  node.dataset.value = value === null || value === undefined ? "" : String(value);
  if (column.kind === "link") {
    const name = row.reply || "";
    if (EDITOR_ROLES.includes(an.me.role)) {
      const link = el("a", "Open " + name + " in the reply editor");
      link.href = value;
      node.appendChild(link);
    } else {
      node.append(el("code", value), document.createTextNode(" (for a writer)"));
    }
  } else {
    node.textContent = shown(column.kind, value);
    if (column.kind !== "label") node.className = "num";
  }
  return node;
}

function drawTable(table, data) {
  const columns = data.columns;
  const head = el("thead");
  const headRow = el("tr");
  for (const c of columns) {
    const th = el("th", c.label);
    th.setAttribute("scope", "col");
    headRow.appendChild(th);
  }
  head.appendChild(headRow);
  const body = el("tbody");
  for (const row of data.rows) {
    const tr = el("tr");
    columns.forEach((c, i) => tr.appendChild(cell(c, row, i === 0)));
    body.appendChild(tr);
  }
  if (!data.rows.length) {
    const td = el("td", "Nothing in this range for these filters.", "muted");
    td.colSpan = columns.length;
    const tr = el("tr", null, "empty-row");
    tr.appendChild(td);
    body.appendChild(tr);
  }
  const parts = [table.querySelector("caption"), head, body];
  if (data.total) {
    const foot = el("tfoot");
    const tr = el("tr");
    columns.forEach((c, i) => tr.appendChild(cell(c, data.total, i === 0)));
    foot.appendChild(tr);
    parts.push(foot);
  }
  table.replaceChildren(...parts);
}

function labelOf(data, key) {
  const column = data.columns.find((c) => c.key === key);
  return column ? column.label : key;
}

function kindOf(data, key) {
  const column = data.columns.find((c) => c.key === key);
  return column ? column.kind : "count";
}

function datasets(spec, data, labels) {
  const at = (rows, key) => {
    // Counts are 0 in a bucket without rows; medians and means are gaps.
    const blank = kindOf(data, key) === "count" ? 0 : null;
    const values = new Map(rows.map((r) => [r[spec.x], r[key]]));
    return labels.map((l) => (values.has(l) && values.get(l) !== null ? values.get(l) : blank));
  };
  if (spec.perChannel) {
    const channels = [...new Set(data.rows.map((r) => r.channel))];
    return channels.flatMap((ch) => spec.perChannel.map((key, i) => ({
      label: ch + " " + labelOf(data, key).toLowerCase(),
      data: at(data.rows.filter((r) => r.channel === ch), key),
      borderDash: i ? [6, 4] : [],
      spanGaps: true,
    })));
  }
  return spec.series.map((key) => ({ label: labelOf(data, key), data: at(data.rows, key), spanGaps: true }));
}

function drawChart(box, spec, data) {
  if (an.drawn[data.chart]) an.drawn[data.chart].destroy();
  delete an.drawn[data.chart];
  if (typeof Chart === "undefined") return;  // the table still has every number
  const labels = spec.timeline ? data.buckets : data.rows.map((r) => r[spec.x]);
  const keys = spec.perChannel || spec.series;
  const kind = kindOf(data, keys[0]);
  const valueAxis = { beginAtZero: true, stacked: !!spec.stacked, max: spec.max,
    ticks: { callback: (v) => (kind === "seconds" ? duration(v) : v) } };
  const categoryAxis = { stacked: !!spec.stacked };
  an.drawn[data.chart] = new Chart(box.querySelector("canvas"), {
    type: spec.type,
    data: { labels, datasets: datasets(spec, data, labels) },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      indexAxis: spec.horizontal ? "y" : "x",
      scales: spec.horizontal ? { x: valueAxis, y: categoryAxis } : { x: categoryAxis, y: valueAxis },
      plugins: {
        legend: { position: "bottom" },
        tooltip: { callbacks: { label: (ctx) => ctx.dataset.label + ": " + shown(kind, ctx.raw) } },
      },
    },
  });
}

function drawExtra(box, data) {
  const extra = box.querySelector(".extra");
  extra.replaceChildren();
  const oldest = data.oldest_unhandled;
  if (data.chart === "handled") {
    if (oldest) {
      extra.dataset.messageId = oldest.message_id;
      extra.append(el("strong", "Oldest message not handled: "),
        document.createTextNode(oldest.conversation_id + " (" + oldest.channel + "), since "
          + oldest.created_at.replace("T", " ").slice(0, 16) + " UTC, waiting "
          + duration(oldest.waiting_seconds)));
    } else {
      delete extra.dataset.messageId;
      extra.textContent = "Every customer message in this range has an answer.";
    }
  } else if (data.chart === "handoff_reasons") {
    extra.textContent = data.conversations + " conversations with a customer message in this range.";
  }
}

async function loadChart(name, query) {
  const box = $("chart-" + name);
  box.dataset.state = "loading";
  const csv = box.querySelector(".csv");
  csv.href = "/api/analytics/" + name + "?" + query + "&format=csv";
  try {
    const data = await api("/api/analytics/" + name + "?" + query);
    if (query !== an.query) return;  // the filters changed meanwhile
    drawTable(box.querySelector("table"), data);
    drawExtra(box, data);
    drawChart(box, SPECS[name], data);
    box.dataset.query = query;
    box.dataset.state = "ready";
  } catch (err) {
    box.dataset.state = "error";
    box.querySelector(".extra").textContent = "Could not load: " + err.message;
  }
}

async function apply(query) {
  an.query = query;
  history.replaceState(null, "", "/analytics?" + query);
  $("status").textContent = "Loading…";
  await Promise.all(an.meta.charts.map((c) => loadChart(c.name, query)));
  if (query === an.query) $("status").textContent = "Updated " + new Date().toLocaleTimeString();
}

async function loadMeta(query) {
  const res = await fetch("/api/analytics?" + query);
  if (res.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  const data = await res.json().catch(() => ({}));
  if (res.status === 400) {
    showError(data.error);
    return loadMeta("");  // the defaults, with the error left on screen
  }
  if (!res.ok) throw new Error(data.error || ("error " + res.status));
  return data;
}

async function main() {
  an.me = await api("/api/me");
  auth.csrf = an.me.csrf;
  $("logout-csrf").value = an.me.csrf;
  $("me").textContent = an.me.display_name + " (" + an.me.role + ")";
  setupAccount(an.me);  // every role changes its own password
  $("to-desk").hidden = an.me.role !== "admin";
  $("to-library").hidden = !EDITOR_ROLES.includes(an.me.role);
  an.meta = await loadMeta(location.search.slice(1));
  const f = an.meta.filters;
  $("from").value = f.from;
  $("to").value = f.to;
  checkboxes($("channels"), "channel", an.meta.channels, f.channels);
  checkboxes($("languages"), "language", an.meta.languages.map((l) => ({ name: l, label: l })), f.languages);
  $("charts").replaceChildren(...an.meta.charts.map(section));
  $("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    const query = formQuery();
    act(async () => {
      const res = await fetch("/api/analytics?" + query);
      const data = await res.json().catch(() => ({}));
      if (!res.ok) { showError(data.error || ("error " + res.status)); return; }
      showError("");
      await apply(query);
    });
  });
  await apply(formQuery());
}

act(main);
