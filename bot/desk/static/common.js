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
