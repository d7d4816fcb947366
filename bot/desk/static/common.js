// Shared by the desk and the reply library pages. Text is always set with
// textContent, never as HTML, so customer or writer text cannot run as script.
"use strict";

const auth = { csrf: "" };
const $ = (id) => document.getElementById(id);

// `background: true` for what the page fetches by itself (a live update's refresh):
// it does not count as the person being active, so an open tab still goes idle.
async function api(path, options = {}) {
  const { background, ...rest } = options;
  const opts = { ...rest, headers: { ...(rest.headers || {}) } };
  if (background) opts.headers["X-Parley-Background"] = "1";
  if (opts.body !== undefined) {
    opts.method = opts.method || "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(opts.body);
  }
  if (opts.method && opts.method !== "GET") opts.headers["X-CSRF-Token"] = auth.csrf;
  const res = await fetch(path, opts);
  if (res.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || ("error " + res.status));
  return data;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function toast(text) {
  const box = $("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 5000);
}

async function act(fn) {
  try { await fn(); } catch (err) { toast(err.message); }
}

function capitalized(text) { return text ? text[0].toUpperCase() + text.slice(1) : text; }

// A status line under a form: announced to screen readers (role="status").
function formStatus(node, text, ok) {
  node.replaceChildren(...(Array.isArray(text) ? text : [capitalized(String(text))]));
  node.className = "form-status " + (ok ? "ok" : "error");
}

// A <dialog> opened by `opener`; its .close buttons (and Escape) close it.
function modal(id, opener, onOpen) {
  const box = $(id);
  for (const b of box.querySelectorAll(".close")) b.addEventListener("click", () => box.close());
  opener.addEventListener("click", () => {
    box.showModal();
    if (onOpen) act(onOpen);
  });
  return box;
}

function labelled(text, input) {
  const label = el("label", text + " ");
  label.appendChild(input);
  return label;
}

function passwordInput(id, autocomplete) {
  const input = el("input");
  Object.assign(input, { id, type: "password", autocomplete, required: true });
  if (id !== "pw-current") Object.assign(input, { minLength: 10, maxLength: 200 });
  return input;
}

// A <dialog> panel titled by its heading (for screen readers), as every dialog built
// in script starts: the account here, contacts.js's search, privacy.js's customer data.
function panelDialog(id, heading, cls = "panel") {
  const box = el("dialog", null, cls);
  box.id = id;
  box.setAttribute("aria-labelledby", id + "-title");
  const title = el("h2", heading);
  title.id = id + "-title";
  box.appendChild(title);
  return box;
}

// The account dialog, built here so every page that has "Account" gets the same one.
function accountDialog() {
  const box = panelDialog("account", "Your account");
  const who = el("p", null, "muted");
  who.id = "account-who";
  const form = el("form", null, "stack");
  form.id = "password-form";
  const fresh = passwordInput("pw-new", "new-password");
  fresh.setAttribute("aria-describedby", "pw-hint");
  const hint = el("p", "At least 10 characters, and not your username. Your other sessions " +
    "end; this one stays.", "muted");
  hint.id = "pw-hint";
  const status = el("p", null, "form-status");
  Object.assign(status, { id: "pw-status" });
  status.setAttribute("role", "status");
  status.setAttribute("aria-live", "polite");
  const buttons = el("div", null, "row");
  const submit = el("button", "Change password");
  submit.type = "submit";
  const close = el("button", "Close", "close");
  close.type = "button";
  buttons.append(submit, close);
  form.append(el("h3", "Change password"),
    labelled("Current password", passwordInput("pw-current", "current-password")),
    labelled("New password", fresh),
    labelled("New password again", passwordInput("pw-again", "new-password")),
    hint, status, buttons);
  box.append(who, form);
  return box;
}

// "Account": change one's own password. The server checks the current one and
// the rules (10+ characters, not the username) and ends the other sessions.
function setupAccount(me) {
  const opener = $("account-open");
  if (!opener) return;
  document.body.appendChild(accountDialog());
  modal("account", opener, () => formStatus($("pw-status"), "", true));
  $("account-who").textContent = me.display_name + " · " + me.username + " (" + me.role + ")";
  $("password-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const status = $("pw-status");
    if ($("pw-new").value !== $("pw-again").value) {
      formStatus(status, "The two new passwords differ.", false);
      return;
    }
    try {
      await api("/api/me/password", { body: { current_password: $("pw-current").value,
        new_password: $("pw-new").value } });
      e.target.reset();
      formStatus(status, "Password changed. Your other sessions have ended; this one stays.", true);
    } catch (err) { formStatus(status, err.message, false); }
  });
}
