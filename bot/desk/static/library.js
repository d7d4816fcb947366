// Parley reply library: writers edit, preview per channel, submit; admins approve.
"use strict";

const lib = { me: null, meta: null, name: null, body: [], draftId: null, samples: {}, timer: null };

function variationEditor(v, index) {
  const box = el("div", null, "variation");
  box.dataset.index = index;
  const text = el("textarea");
  text.rows = 3;
  text.value = v.text || "";
  text.setAttribute("aria-label", "Text of variation " + (index + 1));
  text.className = "v-text";
  text.addEventListener("input", () => { v.text = text.value; changed(); });
  const row = el("div", null, "row");
  const channel = el("select");
  channel.setAttribute("aria-label", "Channel");
  for (const c of [{ name: "", label: "Every channel" }, ...lib.meta.all_channels]) {
    const opt = el("option", c.label);
    opt.value = c.name;
    channel.appendChild(opt);
  }
  channel.value = v.channel || "";
  channel.addEventListener("change", () => {
    if (channel.value) v.channel = channel.value; else delete v.channel;
    changed();
  });
  const language = el("select");
  language.setAttribute("aria-label", "Language");
  for (const l of lib.meta.languages) { const opt = el("option", l); opt.value = l; language.appendChild(opt); }
  language.value = (v.metadata && v.metadata.language) || "en";
  language.addEventListener("change", () => {
    const meta = { ...(v.metadata || {}) };
    if (language.value === "en") delete meta.language; else meta.language = language.value;
    if (Object.keys(meta).length) v.metadata = meta; else delete v.metadata;
    changed();
  });
  const image = el("input");
  image.placeholder = "image URL (optional)";
  image.value = v.image || "";
  image.addEventListener("input", () => { if (image.value) v.image = image.value; else delete v.image; changed(); });
  const remove = el("button", "Remove");
  remove.type = "button";
  remove.disabled = lib.body.length < 2;
  remove.addEventListener("click", () => { lib.body.splice(index, 1); drawVariations(); changed(); });
  row.append(channel, language, image, remove);
  const buttons = el("div", null, "row");
  (v.buttons || []).forEach((b, i) => {
    const title = el("input");
    title.value = b.title;
    title.placeholder = "button title";
    title.addEventListener("input", () => { b.title = title.value; changed(); });
    const payload = el("input");
    payload.value = b.payload;
    payload.placeholder = "payload";
    payload.addEventListener("input", () => { b.payload = payload.value; changed(); });
    const drop = el("button", "×");
    drop.type = "button";
    drop.title = "Remove button";
    drop.addEventListener("click", () => {
      v.buttons.splice(i, 1);
      if (!v.buttons.length) delete v.buttons;
      drawVariations(); changed();
    });
    buttons.append(title, payload, drop);
  });
  const addButton = el("button", "+ button");
  addButton.type = "button";
  addButton.addEventListener("click", () => {
    v.buttons = [...(v.buttons || []), { title: "", payload: "" }];
    drawVariations(); changed();
  });
  buttons.append(addButton);
  box.append(text, row, buttons);
  return box;
}

function drawVariations() {
  $("variations").replaceChildren(...lib.body.map(variationEditor));
}

function usedPlaceholders() {
  const found = new Set();
  for (const m of JSON.stringify(lib.body).matchAll(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g)) found.add(m[1]);
  return [...found];
}

function drawSamples() {
  const box = $("samples");
  box.replaceChildren();
  for (const name of usedPlaceholders()) {
    const known = lib.meta.placeholders[name];
    const label = el("label", "{" + name + "}" + (known ? " — " + known.who : " — unknown"));
    const input = el("input");
    input.value = lib.samples[name] ?? (known ? known.sample : "");
    input.addEventListener("input", () => { lib.samples[name] = input.value; changed(false); });
    label.appendChild(input);
    box.appendChild(label);
  }
}

function drawPreviews(previews) {
  const box = $("previews");
  box.replaceChildren();
  for (const p of previews) {
    const phone = el("div", null, "phone " + p.channel);
    phone.dataset.channel = p.channel;
    phone.dataset.language = p.language;
    phone.appendChild(el("h4", p.label + (p.language !== "en" ? " · " + p.language : "")
      + (p.variants > 1 ? " · 1 of " + p.variants + " at random" : "")));
    if (p.image) phone.appendChild(el("div", "🖼 " + p.image, "bubble"));
    phone.appendChild(el("div", p.text, "bubble"));
    if (p.buttons.length) {
      const chips = el("div", null, "chips");
      for (const b of p.buttons) chips.appendChild(el("span", b, "chip"));
      phone.appendChild(chips);
      if (p.max_buttons && p.buttons.length > p.max_buttons) phone.appendChild(el("div", "sent as a list", "counter"));
    }
    const counter = el("div", p.length + " / " + p.limit + " characters", "counter");
    if (p.length > p.limit) counter.classList.add("over");
    phone.appendChild(counter);
    box.appendChild(phone);
  }
}

function drawProblems(problems) {
  const list = $("problems");
  list.replaceChildren();
  if (!problems.length) list.appendChild(el("li", "No problems on any channel.", "ok"));
  for (const p of problems) list.appendChild(el("li", p.text, p.severity));
  $("submit").disabled = problems.some((p) => p.severity === "error");
}

function changed(redraw = true) {
  if (redraw) drawSamples();
  $("saved").textContent = "unsaved changes";
  clearTimeout(lib.timer);
  lib.timer = setTimeout(check, 300);
}

async function check() {
  const result = await api("/api/library/check", { body: { name: lib.name, body: lib.body, samples: lib.samples } });
  drawPreviews(result.previews);
  drawProblems(result.problems);
}

function showDiff(id, against) {
  return act(async () => {
    const d = await api("/api/library/revisions/" + id + "/diff" + (against ? "?against=" + against : ""));
    $("diff").textContent = d.diff || "(no change)";
    $("diff").hidden = false;
  });
}

function drawHistory(revisions) {
  const list = $("history");
  list.replaceChildren();
  revisions.forEach((r, i) => {
    const item = el("li");
    item.dataset.revision = r.id;
    item.append(el("strong", "#" + r.id), el("span", r.state, "badge"),
      el("span", (r.author || "?") + ", " + new Date(r.updated_at).toLocaleString()));
    if (r.reviewer) item.append(el("span", "reviewed by " + r.reviewer, "muted"));
    if (r.note) item.append(el("span", r.note, "muted"));
    if (r.review_comment) item.append(el("span", "“" + r.review_comment + "”", "muted"));
    const diff = el("button", "Diff vs live");
    diff.type = "button";
    diff.addEventListener("click", () => showDiff(r.id));
    item.append(diff);
    const previous = revisions[i + 1];
    if (previous) {
      const older = el("button", "Diff vs #" + previous.id);
      older.type = "button";
      older.addEventListener("click", () => showDiff(r.id, previous.id));
      item.append(older);
    }
    if (lib.me.role === "admin" && r.published_version) {
      const back = el("button", "Roll back to this");
      back.type = "button";
      back.addEventListener("click", () => act(async () => {
        await api("/api/library/replies/" + lib.name + "/rollback", { body: { revision_id: r.id } });
        toast("Rolled back: live within a second");
        await openReply(lib.name);
      }));
      item.append(back);
    }
    list.appendChild(item);
  });
}

function newReply(name) {
  // A reply no flow sends yet: for agents' canned replies until a story uses it.
  return { live: null, draft: null, revisions: [], fresh: [{ text: "", metadata: { canned: true } }], name };
}

async function openReply(name, isNew = false) {
  const detail = isNew ? newReply(name) : await api("/api/library/replies/" + encodeURIComponent(name));
  lib.name = name;
  lib.draftId = detail.draft ? detail.draft.id : null;
  lib.body = structuredClone(detail.draft ? detail.draft.body : (detail.live || detail.fresh));
  $("editor").hidden = false;
  $("reply-name").textContent = name;
  $("draft-state").textContent = detail.draft ? "your draft #" + detail.draft.id + " (" + detail.draft.state + ")"
    : (detail.live ? "live text" : "new reply, not saved yet");
  const returned = detail.draft && detail.draft.state === "returned";
  $("returned").hidden = !returned;
  if (returned) $("returned").textContent = "Sent back: " + detail.draft.review_comment;
  $("saved").textContent = "";
  $("diff").hidden = true;
  drawVariations();
  drawSamples();
  drawHistory(detail.revisions);
  await check();
}

async function loadList() {
  const q = $("search").value.trim();
  const replies = await api("/api/library/replies" + (q ? "?q=" + encodeURIComponent(q) : ""));
  const list = $("replies");
  list.replaceChildren();
  for (const r of replies) {
    const item = el("li");
    item.dataset.name = r.name;
    item.append(el("strong", r.name));
    if (r.edited) item.append(el("span", "edited", "badge"));
    if (r.in_review) item.append(el("span", "in review", "badge review"));
    item.append(el("span", r.text, "snippet"));
    item.addEventListener("click", () => act(() => openReply(r.name)));
    list.appendChild(item);
  }
}

async function loadReview() {
  const pending = await api("/api/library/review");
  $("review-count").textContent = pending.length;
  const list = $("review");
  list.replaceChildren();
  for (const r of pending) {
    const item = el("li");
    item.dataset.revision = r.id;
    item.append(el("strong", r.name), el("span", " #" + r.id + " by " + (r.author || "?"), "muted"));
    const text = (r.body.find((v) => v.text) || {}).text || "";
    item.append(el("span", text, "snippet"));
    if (lib.me.role === "admin" && r.author_id !== lib.me.id) {
      const approve = el("button", "Approve");
      approve.type = "button";
      approve.className = "approve";
      approve.addEventListener("click", (e) => { e.stopPropagation(); act(async () => {
        await api("/api/library/revisions/" + r.id + "/approve", { body: {} });
        toast(r.name + " is live");
        await refresh();
      }); });
      const back = el("button", "Send back");
      back.type = "button";
      back.addEventListener("click", (e) => { e.stopPropagation(); act(async () => {
        const comment = prompt("What should the writer change?");
        if (!comment) return;
        await api("/api/library/revisions/" + r.id + "/send-back", { body: { comment } });
        await refresh();
      }); });
      item.append(approve, back);
    }
    item.addEventListener("click", () => act(async () => {
      await openReply(r.name);
      await showDiff(r.id);
    }));
    list.appendChild(item);
  }
}

async function save() {
  const saved = await api("/api/library/replies/" + lib.name + "/draft", { body: { body: lib.body } });
  lib.draftId = saved.id;
  $("saved").textContent = "draft #" + saved.id + " saved";
  $("draft-state").textContent = "your draft #" + saved.id + " (" + saved.state + ")";
  drawProblems(saved.problems);
}

async function refresh() {
  await Promise.all([loadList(), loadReview()]);
  if (lib.name) await openReply(lib.name);
}

async function main() {
  lib.me = await api("/api/me");
  auth.csrf = lib.me.csrf;
  $("logout-csrf").value = lib.me.csrf;
  $("me").textContent = lib.me.display_name + " (" + lib.me.role + ")";
  setupAccount(lib.me);  // every role changes its own password
  $("to-desk").hidden = lib.me.role === "writer";
  lib.meta = await api("/api/library/meta");
  $("new-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("new-name").value.trim();
    if (!/^utter_[a-z0-9_]{1,100}$/.test(name)) { toast("Reply names look like utter_order_shipped"); return; }
    act(() => openReply(name, true));
  });
  $("search").addEventListener("input", () => { clearTimeout(loadList.timer); loadList.timer = setTimeout(() => act(loadList), 200); });
  $("add-variation").addEventListener("click", () => { lib.body.push({ text: "" }); drawVariations(); changed(); });
  $("save").addEventListener("click", () => act(save));
  $("submit").addEventListener("click", () => act(async () => {
    await save();
    await api("/api/library/revisions/" + lib.draftId + "/submit", { body: {} });
    toast("Submitted for review");
    await refresh();
  }));
  await refresh();
  // A link from elsewhere (the analytics) opens one reply: /library?reply=utter_x or #utter_x.
  let wanted = new URLSearchParams(location.search).get("reply");
  if (!wanted) try { wanted = decodeURIComponent(location.hash.slice(1)); } catch (err) { wanted = ""; }
  if (/^utter_[a-z0-9_]{1,100}$/.test(wanted)) await act(() => openReply(wanted));
}

main();
