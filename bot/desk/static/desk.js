// Parley desk. All customer-provided text is written with textContent, never as HTML.
"use strict";

const SUPERVISING = ["supervisor", "admin"];  // agents.SUPERVISING_ROLES
const state = { me: null, tickets: [], current: null, agents: [], seen: new Set(), firstLoad: true, languages: [] };
// Where a conversation's language came from (bot/language.py); none: nothing has said yet.
const LANGUAGE_SOURCES = { platform: "from the platform", detected: "detected", agent: "set by an agent" };
function waited(seconds) {
  if (seconds < 60) return seconds + "s";
  const m = Math.floor(seconds / 60);
  return m < 60 ? m + "m " + (seconds % 60) + "s" : Math.floor(m / 60) + "h " + (m % 60) + "m";
}

function secondsSince(iso) { return Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000)); }

function beep() {
  try {
    const ctx = new (window.AudioContext || window.webkitAudioContext)();
    const osc = ctx.createOscillator();
    osc.frequency.value = 880;
    osc.connect(ctx.destination);
    osc.start();
    osc.stop(ctx.currentTime + 0.15);
  } catch (err) { /* sound is a nicety; the toast and highlight still show */ }
}

function renderQueue() {
  const body = $("tickets");
  body.replaceChildren();
  const waiting = state.tickets.filter((t) => t.status === "waiting").length;
  $("queue-count").textContent = waiting;
  document.title = (waiting ? "(" + waiting + ") " : "") + "Parley desk";
  $("empty").hidden = state.tickets.length > 0;
  for (const t of state.tickets) {
    const row = document.createElement("tr");
    row.dataset.ticket = t.id;
    if (t.priority > 0) row.classList.add("high");
    if (state.current === t.id) row.classList.add("selected");
    if (!state.seen.has(t.id) && !state.firstLoad) row.classList.add("fresh");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.className = "pick";
    box.value = t.id;
    box.addEventListener("click", (e) => { e.stopPropagation(); updateDismiss(); });
    const pick = el("td"); pick.appendChild(box);
    const status = t.status === "assigned" ? "with " + (t.agent_name || "agent") : "waiting";
    row.append(pick, el("td", t.display_name), el("td", t.reason.replace("_", " ")),
      el("td", t.channel), el("td", waited(t.status === "waiting" ? secondsSince(t.created_at) : t.waiting_seconds), "wait"),
      el("td", status));
    row.addEventListener("click", () => openTicket(t.id));
    body.appendChild(row);
  }
  for (const t of state.tickets) state.seen.add(t.id);
  state.firstLoad = false;
  updateDismiss();
}

function updateDismiss() {
  $("dismiss").disabled = document.querySelectorAll(".pick:checked").length === 0;
}

async function loadQueue(background = false) {
  state.tickets = await api("/api/tickets?status=open", { background });
  renderQueue();
}

function languageName(code) {
  const known = state.languages.find((l) => l.code === code);
  return known ? known.name : code;
}

function renderLanguage(ticket) {
  const select = $("language");
  select.replaceChildren();
  for (const l of state.languages) {
    const opt = el("option", l.name);
    opt.value = l.code;
    select.appendChild(opt);
  }
  select.value = ticket.language;
}

function renderContext(ticket) {
  const dl = $("context");
  dl.replaceChildren();
  const rows = [["reason", ticket.reason.replace("_", " ")], ["channel", ticket.channel],
    ["customer", ticket.display_name], ["priority", ticket.priority > 0 ? "high" : "normal"],
    ["waiting", waited(ticket.waiting_seconds)],
    ["language", languageName(ticket.language) + " (" + (LANGUAGE_SOURCES[ticket.language_source] || "default") + ")"]];
  for (const i of (ticket.context.intents || [])) rows.push(["said", i.text + "  → " + i.intent + " (" + Math.round(i.confidence * 100) + "%)"]);
  for (const [k, v] of Object.entries(ticket.context.slots || {})) rows.push([k, JSON.stringify(v)]);
  for (const [k, v] of rows) dl.append(el("dt", k), el("dd", v));
  $("tags").value = (ticket.tags || []).join(", ");
}

// A trainee's reply not (yet) sent: where it stands (bot/handoff/approvals.py).
const REVIEW_STATES = { pending: "waiting for a supervisor's approval", returned: "sent back: not sent",
  withdrawn: "withdrawn: not sent" };
function reviewLine(review) {
  const item = el("li", null, "held");
  item.dataset.review = review.id;
  item.dataset.status = review.status;
  item.append(el("span", (review.agent_name || "trainee") + " · not sent", "who"), document.createTextNode(review.draft));
  item.append(el("span", REVIEW_STATES[review.status] || review.status, "review-state"));
  if (review.status === "returned" && review.comment) item.append(el("span", "“" + review.comment + "” — " + (review.decided_by_name || "supervisor"), "review-state"));
  if (review.status === "pending" && review.agent_id === state.me.id) {
    const b = el("button", "Withdraw");
    b.type = "button";
    b.addEventListener("click", () => act(async () => {
      await api("/api/approvals/" + review.id + "/withdraw", { body: {} });
      $("reply").value = review.draft;  // to rewrite it
      await openTicket(state.current);
    }));
    item.append(b);
  }
  return item;
}

function renderTranscript(lines, reviews = []) {
  const list = $("transcript");
  list.replaceChildren();
  const entries = lines.map((line) => ({ at: line.created_at, line }));
  for (const r of reviews) if (r.status !== "approved") entries.push({ at: r.created_at, review: r });
  entries.sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
  for (const { line, review } of entries) {
    if (review) { list.appendChild(reviewLine(review)); continue; }
    const item = el("li", null, line.author);
    const who = line.author === "note" ? "internal note" : line.author;
    item.append(el("span", who, "who"), document.createTextNode(line.text));
    if (line.approved_by_name) item.append(el("span", "approved by " + line.approved_by_name, "approved-by"));
    if (line.delivery_error) item.append(el("span", "⚠ not delivered: " + line.delivery_error, "failed"));
    item.dataset.author = line.author;
    list.appendChild(item);
  }
  list.scrollTop = list.scrollHeight;
}

// Supervisors and admins: trainees' replies waiting for approval, live.
function seconds(value) { return value === null || value === undefined ? "–" : value < 1 ? Math.round(value * 1000) + " ms" : value.toFixed(1) + " s"; }
// Updated in place, by review id: a supervisor's half-typed edit or comment survives
// the live refreshes that other trainees' replies cause.
async function loadApprovals(background = false) {
  const data = await api("/api/approvals", { background });
  const list = $("approvals-list");
  $("approvals-count").textContent = data.waiting.length;
  $("approvals-empty").hidden = data.waiting.length > 0;
  const t = data.timings;
  $("approvals-timings").textContent = t.approved ? "Over the last " + t.approved + " approved: waited for review " +
    seconds(t.review_p50) + " (median), " + seconds(t.review_p95) + " (p95); approval to platform " +
    (t.delivered ? seconds(t.delivery_p50) + " (median), " + seconds(t.delivery_p95) + " (p95)" : "–") : "";
  const shown = new Map([...list.children].map((li) => [li.dataset.review, li]));
  const waiting = new Set(data.waiting.map((r) => String(r.id)));
  for (const [id, li] of shown) if (!waiting.has(id)) li.remove();
  for (const r of data.waiting) {
    const known = shown.get(String(r.id));
    if (known) {
      known.querySelector(".waited").textContent = " · waiting " + waited(r.waiting_seconds);
      continue;
    }
    list.appendChild(approvalItem(r));
  }
}

function approvalItem(r) {
  const item = el("li");
  item.dataset.review = r.id;
  const head = el("div", null, "row");
  const open = el("button", r.display_name);
  open.type = "button";
  open.title = "Open the conversation";
  open.addEventListener("click", () => act(() => openTicket(r.ticket_id)));
  head.append(el("strong", r.agent_name || "trainee"), document.createTextNode(" to "), open,
    el("span", " · waiting " + waited(r.waiting_seconds), "muted waited"));
  const text = el("textarea");
  text.rows = 3;
  text.maxLength = 4096;
  text.value = r.text;
  text.setAttribute("aria-label", "Reply by " + (r.agent_name || "trainee") + " to " + r.display_name);
  const comment = el("input");
  comment.placeholder = "What to change (to send back)";
  comment.maxLength = 2000;
  comment.setAttribute("aria-label", "Comment for " + (r.agent_name || "trainee"));
  const approve = el("button", "Approve");
  approve.type = "button";
  approve.addEventListener("click", () => act(async () => {
    const edited = text.value.trim() !== r.text.trim();
    await api("/api/approvals/" + r.id + "/approve", { body: edited ? { text: text.value } : {} });
    toast(edited ? "Edited and sent to the customer." : "Approved and sent to the customer.");
    await loadApprovals();
  }));
  const back = el("button", "Send back");
  back.type = "button";
  back.addEventListener("click", () => act(async () => {
    if (!comment.value.trim()) { comment.focus(); throw new Error("Say what to change before sending a reply back."); }
    await api("/api/approvals/" + r.id + "/send-back", { body: { comment: comment.value } });
    toast("Sent back to " + (r.agent_name || "the trainee") + ".");
    await loadApprovals();
  }));
  const buttons = el("div", null, "row");
  buttons.append(approve, comment, back);
  item.append(head, text, buttons);
  return item;
}

// Satisfaction survey (bot/survey.py): what the customer answered about this ticket.
const SURVEY_QUESTIONS = { answer: "The answer", time: "Time it took", agent: "Agent's help", improve: "To improve" };
const SURVEY_STATES = { asking: "waiting for answers", done: "finished", expired: "not sent: the platform's window closed", stopped: "stopped: the customer moved on" };
async function loadSurvey(id, background = false) {
  let box = $("survey");
  if (!box) {
    box = el("section", null, "survey");
    box.id = "survey";
    document.querySelector("#conversation .context").appendChild(box);
  }
  const data = await api("/api/tickets/" + id + "/survey", { background });
  if (state.current !== id) return;  // another ticket opened meanwhile
  box.replaceChildren(el("h3", "Survey"));
  if (!data.surveys.length) { box.append(el("p", "No survey for this ticket.", "muted")); return; }
  for (const s of data.surveys) {
    box.append(el("p", SURVEY_STATES[s.state] || s.state, "state"));
    const dl = el("dl");
    for (const a of s.answers) {
      const value = a.score !== null ? el("dd", "★".repeat(a.score) + "☆".repeat(5 - a.score) + " " + a.score + "/5", "score") : el("dd", a.text);
      dl.append(el("dt", SURVEY_QUESTIONS[a.question] || a.question), value);
    }
    if (!s.answers.length) box.append(el("p", "No answers.", "muted"));
    else box.append(dl);
  }
}

async function openTicket(id, background = false) {
  state.current = id;
  const data = await api("/api/tickets/" + id, { background });
  const t = data.ticket;
  $("conversation").hidden = false;
  $("conv-title").textContent = t.display_name + " · " + t.channel;
  const mine = t.status === "assigned" && t.assigned_agent_id === state.me.id;
  // Supervisors and admins may also move a ticket another agent holds (the server decides).
  const movable = mine || (t.status === "assigned" && SUPERVISING.includes(state.me.role));
  $("claim").disabled = t.status !== "waiting";
  $("resolve").disabled = !mine;
  for (const id2 of ["transfer", "transfer-to"]) $(id2).disabled = !movable;
  $("send").disabled = !(mine || $("as-note").checked);
  $("send").textContent = state.me.trainee && !$("as-note").checked ? "Send for approval" : "Send";
  state.languages = data.languages || [];
  renderContext(t);
  renderLanguage(t);
  renderTranscript(data.transcript, data.reviews || []);
  act(() => loadSurvey(id, background));
  renderQueue();
  // Other panels of the ticket view (contacts.js) draw themselves from this.
  document.dispatchEvent(new CustomEvent("parley:ticket-opened", { detail: { ticket: t, background } }));
}

function connectEvents() {
  const source = new EventSource("/events");
  source.onopen = () => $("live").classList.remove("down");
  source.onerror = () => {
    $("live").classList.add("down");
    // The stream ends with its session (logout elsewhere, idle, disabled): the
    // browser's reconnect is refused, so find out why (a 401 goes to the login page).
    if (source.readyState === EventSource.CLOSED) {
      act(async () => {
        await api("/api/me");
        toast("Live updates stopped (too many desk tabs open?). Reload to resume.");
      });
    }
  };
  const refresh = (e) => {
    const ev = JSON.parse(e.data);
    loadQueue(true);
    if (state.current && ev.ticket_id === state.current) openTicket(state.current, true);
  };
  for (const kind of ["ticket_claimed", "ticket_transferred", "ticket_resolved", "ticket_abandoned",
    "ticket_dismissed", "ticket_updated", "message"]) source.addEventListener(kind, refresh);
  const reviewed = (e) => {
    const ev = JSON.parse(e.data);
    if (SUPERVISING.includes(state.me.role)) act(() => loadApprovals(true));
    if (state.current && ev.ticket_id === state.current) act(() => openTicket(state.current, true));
    return ev;
  };
  source.addEventListener("reply_held", (e) => {
    reviewed(e);
    if (SUPERVISING.includes(state.me.role)) { toast("A trainee's reply waits for your approval"); beep(); }
  });
  // A contact linked or unlinked (contacts.js redraws on the ticket's refresh).
  source.addEventListener("contact_updated", (e) => {
    const ev = JSON.parse(e.data);
    const t = state.tickets.find((x) => x.id === state.current);
    if (t && ev.conversation_id === t.conversation_id) act(() => openTicket(state.current, true));
  });
  source.addEventListener("reply_reviewed", (e) => {
    const ev = reviewed(e);
    if (ev.payload.agent_id === state.me.id && ev.payload.status === "returned") toast("A supervisor sent your reply back: see the conversation");
  });
  source.addEventListener("ticket_created", (e) => {
    refresh(e);
    const ev = JSON.parse(e.data);
    toast("New conversation waiting (" + ev.payload.reason.replace("_", " ") + ")");
    beep();
  });
}

// Canned replies: "/ship" in the reply box lists matching replies from the library.
async function showCanned() {
  const box = $("canned");
  const value = $("reply").value;
  const match = /^\/(\S*)$/.exec(value);
  if (!match || !state.current) { box.hidden = true; return; }
  const found = await api("/api/canned?q=" + encodeURIComponent(match[1]) + "&ticket=" + state.current);
  box.replaceChildren();
  for (const r of found) {
    const item = el("li");
    item.append(el("span", r.shortcut, "shortcut"), el("span", r.text));
    item.dataset.name = r.name;
    item.addEventListener("mousedown", (e) => { e.preventDefault(); useCanned(r.text, r.name); });
    box.appendChild(item);
  }
  box.hidden = !found.length;
  if (found.length) box.firstChild.classList.add("active");
}

// The picked reply's name goes with the reply if it is sent as picked (analytics).
function useCanned(text, name) {
  state.canned = { text, name };
  $("reply").value = text;
  $("canned").hidden = true;
  $("reply").focus();
}

// Transfer targets: active users who answer customers.
async function loadAgents() {
  state.agents = await api("/api/agents");
  const select = $("transfer-to");
  select.replaceChildren();
  for (const a of state.agents.filter((x) => x.id !== state.me.id)) {
    const opt = el("option", a.display_name);
    opt.value = a.id;
    select.appendChild(opt);
  }
}

// Admins: the "Users" panel (list, add, disable/enable, reset password, end sessions).
function lastSeen(iso) { return iso ? new Date(iso).toLocaleString() : "never"; }

async function userAction(user, action, done) {
  const status = $("users-status");
  try {
    const data = await api("/api/users/" + user.id + "/" + action, { body: {} });
    formStatus(status, done(data), true);
    await loadUsers();
    await loadAgents();
  } catch (err) { formStatus(status, err.message, false); }
}

function userButton(box, label, user, handler) {
  const b = el("button", label);
  b.type = "button";
  b.setAttribute("aria-label", label + ": " + user.username);
  b.addEventListener("click", handler);
  box.appendChild(b);
}

async function loadUsers() {
  const users = await api("/api/users");
  const body = $("users-list");
  body.replaceChildren();
  for (const u of users) {
    const row = el("tr", null, u.disabled ? "disabled" : "");
    row.dataset.user = u.username;
    const who = el("td");
    who.append(el("strong", u.display_name), el("span", " " + u.username, "muted"));
    const box = el("div", null, "row");
    const self = u.id === state.me.id;
    if (!self && u.disabled) {
      userButton(box, "Enable", u, () => userAction(u, "enable", () => u.username + " can log in again."));
    } else if (!self) {
      userButton(box, "Disable", u, () => {
        if (confirm("Disable " + u.username + "? They are logged out everywhere at once.")) {
          userAction(u, "disable", () => u.username + " is disabled and logged out.");
        }
      });
    }
    if (!self) {
      userButton(box, "Reset password", u, () => {
        if (!confirm("Make a new password for " + u.username + "? Their sessions end.")) return;
        userAction(u, "reset-password", (data) => ["New password for " + u.username + ": ",
          el("span", data.password, "secret"), " (shown only now; give it to them safely)."]);
      });
    }
    userButton(box, "End sessions", u, () => {
      if (self && !confirm("This logs you out too. Go on?")) return;
      userAction(u, "end-sessions", (data) => data.ended + " session(s) of " + u.username + " ended.");
    });
    const actions = el("td");
    actions.appendChild(box);
    if (u.role === "agent") {
      userButton(box, u.trainee ? "End training" : "Make trainee", u, () => act(async () => {
        await api("/api/users/" + u.id + "/trainee", { body: { trainee: !u.trainee } });
        formStatus($("users-status"), u.trainee ? u.username + "'s replies now go straight to customers."
          : u.username + "'s replies now wait for a supervisor's approval.", true);
        await loadUsers();
      }));
    }
    row.append(who, el("td", u.role + (u.trainee ? " (trainee)" : "")), el("td", u.disabled ? "disabled" : "active"),
      el("td", lastSeen(u.last_seen_at)), el("td", u.sessions), actions);
    body.appendChild(row);
  }
}

function setupUsers() {
  $("users-open").hidden = false;
  modal("users", $("users-open"), () => { formStatus($("users-status"), "", true); return loadUsers(); });
  $("new-user-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const status = $("users-status");
    const body = { username: $("nu-username").value.trim(), role: $("nu-role").value,
      password: $("nu-password").value };
    if ($("nu-name").value.trim()) body.display_name = $("nu-name").value.trim();
    try {
      const made = await api("/api/users", { body });
      e.target.reset();
      formStatus(status, "Added " + made.username + " (" + made.role + ").", true);
      await loadUsers();
      await loadAgents();
    } catch (err) { formStatus(status, err.message, false); }
  });
}

async function main() {
  const me = await api("/api/me");
  state.me = me;
  document.dispatchEvent(new CustomEvent("parley:me", { detail: { me } }));
  auth.csrf = me.csrf;
  $("logout-csrf").value = me.csrf;
  $("me").textContent = me.display_name + " (" + me.role + (me.trainee ? ", trainee" : "") + ")";
  $("to-analytics").hidden = me.role !== "admin";
  setupAccount(me);
  if (me.role === "admin") setupUsers();
  if (SUPERVISING.includes(me.role)) {
    $("approvals").hidden = false;
    await loadApprovals();
  }
  await loadAgents();
  const select = $("transfer-to");
  $("claim").addEventListener("click", () => act(async () => {
    await api("/api/tickets/" + state.current + "/claim", { body: {} });
    await openTicket(state.current);
  }));
  $("resolve").addEventListener("click", () => act(async () => {
    await api("/api/tickets/" + state.current + "/resolve", { body: {} });
    await openTicket(state.current);
    await loadQueue();
  }));
  $("transfer").addEventListener("click", () => act(async () => {
    await api("/api/tickets/" + state.current + "/transfer", { body: { agent_id: Number(select.value) } });
    await openTicket(state.current);
  }));
  $("reply").addEventListener("input", () => act(showCanned));
  $("reply").addEventListener("keydown", (e) => {
    const active = document.querySelector("#canned li.active");
    if (e.key === "Enter" && !$("canned").hidden && active) {
      e.preventDefault();
      useCanned(active.lastChild.textContent, active.dataset.name);
    } else if (e.key === "Escape") {
      $("canned").hidden = true;
    }
  });
  $("as-note").addEventListener("change", () => { if (state.current) openTicket(state.current); });
  $("reply-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("reply").value.trim();
    if (!text) return;
    const kind = $("as-note").checked ? "note" : "reply";
    const picked = kind === "reply" && state.canned && state.canned.text.trim() === text ? state.canned.name : null;
    act(async () => {
      const done = await api("/api/tickets/" + state.current + "/" + kind, { body: picked ? { text, reply_name: picked } : { text } });
      if (done.held) toast("Sent to a supervisor for approval; the customer gets it once approved.");
      state.canned = null;
      $("reply").value = "";
      await openTicket(state.current);
    });
  });
  $("tags-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const tags = $("tags").value.split(",").map((s) => s.trim()).filter(Boolean);
    act(() => api("/api/tickets/" + state.current + "/tags", { body: { tags } }));
  });
  $("language-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const language = $("language").value;
    act(async () => {
      await api("/api/tickets/" + state.current + "/language", { body: { language } });
      await openTicket(state.current);
    });
  });
  $("dismiss").addEventListener("click", () => act(async () => {
    const ids = [...document.querySelectorAll(".pick:checked")].map((b) => Number(b.value));
    await api("/api/tickets/dismiss", { body: { ids } });
    await loadQueue();
  }));
  setInterval(() => {
    for (const row of document.querySelectorAll("#tickets tr")) {
      const t = state.tickets.find((x) => String(x.id) === row.dataset.ticket);
      if (t && t.status === "waiting") row.querySelector(".wait").textContent = waited(secondsSince(t.created_at));
    }
  }, 1000);
  await loadQueue();
  connectEvents();
}

main();
