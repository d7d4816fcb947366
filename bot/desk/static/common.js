// Shared by the desk and the reply library pages. Text is always set with
// textContent, never as HTML, so customer or writer text cannot run as script.
"use strict";

const auth = { csrf: "" };
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const opts = { ...options, headers: { ...(options.headers || {}) } };
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

// "Account": change one's own password. The server checks the current one and
// the rules (10+ characters, not the username) and ends the other sessions.
function setupAccount(me) {
  const opener = $("account-open");
  if (!opener) return;
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
