// Admins: "Customer data": export everything stored about a customer (JSON), erase it,
// and read the audit trail (bot/desk/privacy.py). Built here, shown only to admins.
"use strict";

const privacyState = { conversationId: null };

document.addEventListener("parley:ticket-opened", (e) => {
  privacyState.conversationId = e.detail.ticket.conversation_id;
});

function privacyDialog() {
  const box = panelDialog("privacy", "Customer data", "panel wide");
  const help = el("p", "A customer's conversations, one per channel (for example telegram:123456, " +
    "whatsapp:351912345678), separated by commas. The open conversation is filled in.", "muted");
  const ids = el("input");
  Object.assign(ids, { id: "privacy-ids", maxLength: 4000, autocomplete: "off" });
  ids.style.width = "100%";
  const status = el("p", null, "form-status");
  status.id = "privacy-status";
  status.setAttribute("role", "status");
  status.setAttribute("aria-live", "polite");
  const exportButton = el("button", "Export (JSON)");
  Object.assign(exportButton, { id: "privacy-export", type: "button" });
  const confirmInput = el("input");
  Object.assign(confirmInput, { id: "privacy-confirm", placeholder: "type ERASE", autocomplete: "off", maxLength: 10 });
  const eraseButton = el("button", "Erase for good");
  Object.assign(eraseButton, { id: "privacy-erase", type: "button" });
  const actions = el("div", null, "row");
  actions.append(exportButton, labelled("To erase, type ERASE:", confirmInput), eraseButton);
  const trail = el("table", null, "users-table");
  const head = el("thead");
  const headRow = el("tr");
  for (const h of ["When", "Who", "What", "Conversations", "Details"]) {
    const th = el("th", h);
    th.scope = "col";
    headRow.appendChild(th);
  }
  head.appendChild(headRow);
  const body = el("tbody");
  body.id = "privacy-audit";
  trail.append(head, body);
  const close = el("button", "Close", "close");
  close.type = "button";
  const closeRow = el("div", null, "row");
  closeRow.appendChild(close);
  box.append(help, labelled("Conversations", ids), actions, status,
    el("h3", "Audit trail"), trail, closeRow);
  return box;
}

function privacyIds() {
  return $("privacy-ids").value.split(",").map((s) => s.trim()).filter(Boolean);
}

async function loadAudit() {
  const data = await api("/api/privacy/audit?limit=20");
  const names = Object.fromEntries((state.agents || []).map((a) => ["agent:" + a.id, a.display_name]));
  const body = $("privacy-audit");
  body.replaceChildren();
  for (const e of data.entries) {
    const details = Object.entries(e.details).map(([k, v]) => k + ": " + (typeof v === "object" ? JSON.stringify(v) : v)).join(", ");
    const row = el("tr");
    row.append(el("td", new Date(e.at).toLocaleString()), el("td", names[e.actor] || e.actor),
      el("td", e.action), el("td", e.subject.join(", ") || "–"), el("td", details));
    body.appendChild(row);
  }
}

async function exportData() {
  const ids = privacyIds();
  if (!ids.length) throw new Error("Name at least one conversation.");
  const query = ids.map((id) => "conversation=" + encodeURIComponent(id)).join("&");
  const data = await api("/api/privacy/export?" + query);
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
  const link = el("a");
  link.href = URL.createObjectURL(blob);
  link.download = "parley-export-" + data.exported_at.slice(0, 19).replace(/:/g, "") + ".json";
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  formStatus($("privacy-status"), "Exported " + data.conversations.length + " conversation(s).", true);
}

async function eraseData() {
  const ids = privacyIds();
  if (!ids.length) throw new Error("Name at least one conversation.");
  if ($("privacy-confirm").value !== "ERASE") throw new Error("Type ERASE to confirm: erasing cannot be undone.");
  const result = await api("/api/privacy/erase", { body: { conversations: ids, confirm: "ERASE" } });
  $("privacy-confirm").value = "";
  const counts = Object.entries(result.erased || {}).filter(([, v]) => typeof v === "number")
    .map(([k, v]) => v + " " + k.replace(/_/g, " ")).join(", ");
  formStatus($("privacy-status"), "Erased " + ids.join(", ") + (counts ? " (" + counts + ")." : "."), true);
}

function setupPrivacy(me) {
  if (me.role !== "admin" || $("privacy")) return;
  const opener = el("button", "Customer data");
  Object.assign(opener, { id: "privacy-open", type: "button" });
  opener.setAttribute("aria-haspopup", "dialog");
  $("users-open").after(opener);
  document.body.appendChild(privacyDialog());
  modal("privacy", opener, async () => {
    formStatus($("privacy-status"), "", true);
    if (privacyState.conversationId && !$("privacy-ids").value) $("privacy-ids").value = privacyState.conversationId;
    await loadAudit();
  });
  const run = (fn) => async () => {
    try { await fn(); await loadAudit(); } catch (err) { formStatus($("privacy-status"), err.message, false); }
  };
  $("privacy-export").addEventListener("click", run(exportData));
  $("privacy-erase").addEventListener("click", run(eraseData));
}

// desk.js says who is logged in once /api/me answered (or already did).
if (state.me) setupPrivacy(state.me);
document.addEventListener("parley:me", (e) => setupPrivacy(e.detail.me));
