// Contacts (bot/contacts.py): the ticket's customer on their other channels, and a
// search of contacts by name, channel, phone, email or conversation id. Customer
// text is always set with textContent (el()), never as HTML.
"use strict";

(() => {
  const QUESTIONS = { answer: "Answer", time: "Time", agent: "Agent", improve: "To improve", rating: "Rating" };
  const shown = { ticket: null };  // the ticket open in the desk (desk.js tells us)

  function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }
  function stars(score) { return "★".repeat(score) + "☆".repeat(5 - score) + " " + score + "/5"; }

  function button(label, onClick, aria) {
    const b = el("button", label);
    b.type = "button";
    if (aria) b.setAttribute("aria-label", aria);
    b.addEventListener("click", () => act(onClick));
    return b;
  }

  function section() {
    let box = $("contact");
    if (!box) {
      box = el("section", null, "contact");
      box.id = "contact";
      box.setAttribute("aria-labelledby", "contact-title");
      document.querySelector("#conversation .context").appendChild(box);
    }
    return box;
  }

  async function unlink(conversationId, label) {
    if (!confirm("Take " + label + " out of this contact? It will not be linked again automatically.")) return;
    await api("/api/contacts/unlink", { body: { conversation_id: conversationId } });
    toast(label + " is no longer linked.");
    await load(shown.ticket);
  }

  function conversationItem(c) {
    const item = el("li");
    item.dataset.conversation = c.id;
    item.append(el("strong", c.channel), document.createTextNode(" · " + c.display_name),
      el("span", " · last message " + when(c.last_message_at), "muted"));
    if (c.linked_by) item.append(el("span", " · linked " + (c.linked_by === "automatic" ? "automatically" : "by " + c.linked_by), "muted"));
    const label = c.display_name + " (" + c.channel + ")";
    if (c.open_ticket_id && !c.current) item.append(" ", button("Open", () => openTicket(c.open_ticket_id), "Open ticket of " + label));
    if (c.linked_by) item.append(" ", button(c.current ? "Unlink this conversation" : "Unlink", () => unlink(c.id, label), "Unlink " + label));
    return item;
  }

  // Not linked automatically (the evidence pointed at two people, or a link failed):
  // the agent decides.
  function maybeItem(c, conversationId) {
    const item = el("li");
    item.dataset.conversation = c.id;
    item.append(el("strong", c.channel), document.createTextNode(" · " + c.display_name),
      el("span", " · last message " + when(c.last_message_at), "muted"));
    const label = c.display_name + " (" + c.channel + ")";
    item.append(" ", button("Link", async () => {
      await api("/api/contacts/link", { body: { conversation_id: conversationId, with_conversation_id: c.id } });
      toast("Linked: " + label + ".");
      await load(shown.ticket);
    }, "Link " + label + " to this customer"));
    if (c.open_ticket_id) item.append(" ", button("Open", () => openTicket(c.open_ticket_id), "Open ticket of " + label));
    return item;
  }

  function ticketItem(t) {
    const item = el("li");
    item.dataset.ticket = t.id;
    const head = el("div");
    head.append(el("strong", "#" + t.id + " " + t.channel), document.createTextNode(" · " + t.status + " · " + t.reason.replace("_", " ")),
      el("span", " · " + when(t.created_at) + (t.agent ? " · " + t.agent : ""), "muted"));
    item.append(head);
    if (t.tags.length) item.append(el("div", "tags: " + t.tags.join(", "), "muted"));
    if (t.ratings.length) {
      const dl = el("dl", null, "ratings");
      for (const r of t.ratings) dl.append(el("dt", QUESTIONS[r.question] || r.question), r.score !== null ? el("dd", stars(r.score), "score") : el("dd", r.text));
      item.append(dl);
    }
    for (const n of t.notes) item.append(el("p", (n.agent ? n.agent + ": " : "") + n.text, "contact-note"));
    return item;
  }

  function render(data) {
    const box = section();
    const title = el("h3", "Contact");
    title.id = "contact-title";
    box.replaceChildren(title);
    const others = data.conversations.filter((c) => !c.current);
    if (data.contact) {
      const name = el("p", null, "contact-name");
      name.append(el("strong", data.contact.name || "Same customer on " + data.conversations.length + " conversations"));
      name.append(" ", button("Rename", async () => {
        const given = prompt("Name for this customer (empty to clear)", data.contact.name || "");
        if (given === null) return;
        await api("/api/contacts/name", { body: { contact_id: data.contact.id, name: given } });
        await load(shown.ticket);
      }, "Rename contact"));
      box.append(name);
    } else {
      box.append(el("p", data.kept_apart ? "Unlinked by " + (data.unlinked_by || "an agent") + ": not linked automatically."
        : "No other conversation is linked to this customer.", "muted"));
    }
    if (others.length) {
      box.append(el("h4", "Other conversations"));
      const list = el("ul", null, "plain contact-conversations");
      for (const c of others) list.append(conversationItem(c));
      box.append(list);
    }
    if (data.maybe_same && data.maybe_same.length) {
      box.append(el("h4", "May be the same person as"),
        el("p", "A phone number or email matches, but it was not linked automatically.", "muted"));
      const list = el("ul", null, "plain contact-maybe");
      for (const c of data.maybe_same) list.append(maybeItem(c, data.conversation_id));
      box.append(list);
    }
    const own = data.conversations.find((c) => c.current);
    if (data.contact && own) {
      const row = el("p");
      row.append(button("Unlink this conversation", () => unlink(own.id, own.display_name + " (" + own.channel + ")"), "Unlink this conversation"));
      box.append(row);
    }
    if (data.identifiers.length) {
      const ids = el("ul", null, "plain contact-identifiers");
      for (const i of data.identifiers) ids.append(el("li", i.kind + " · " + (i.verified ? "verified" : "typed") + " · " + i.channel, "muted"));
      box.append(el("h4", "Identifiers"), ids);
    }
    box.append(el("h4", "Past tickets"));
    if (!data.tickets.length) box.append(el("p", "None.", "muted"));
    else {
      const list = el("ol", null, "plain contact-tickets");
      for (const t of data.tickets) list.append(ticketItem(t));
      box.append(list);
      if (data.more_tickets) box.append(el("p", "Older tickets not shown.", "muted"));
    }
    box.append(button("Find and link…", () => openSearch(), "Find a conversation to link"));
  }

  async function load(ticket, background = false) {
    if (!ticket) return;
    const data = await api("/api/tickets/" + ticket.id + "/contact", { background });
    if (!shown.ticket || shown.ticket.id !== ticket.id) return;  // another ticket opened meanwhile
    render(data);
  }

  document.addEventListener("parley:ticket-opened", (e) => {
    shown.ticket = e.detail.ticket;
    act(() => load(e.detail.ticket, e.detail.background));
  });

  // -- the search dialog ---------------------------------------------------------------
  function dialog() {
    const box = panelDialog("contacts", "Contacts", "panel wide");
    const form = el("form", null, "row contacts-form");
    form.id = "contacts-form";
    const q = el("input");
    Object.assign(q, { id: "contacts-q", type: "search", maxLength: 200, autocomplete: "off",
      placeholder: "Name, phone, email or conversation id" });
    q.setAttribute("aria-label", "Search contacts");
    const channel = el("select");
    channel.id = "contacts-channel";
    channel.setAttribute("aria-label", "Channel");
    const all = el("option", "All channels");
    all.value = "";
    channel.append(all);
    const go = el("button", "Search");
    go.type = "submit";
    form.append(q, channel, go);
    const status = el("p", null, "form-status");
    status.id = "contacts-status";
    status.setAttribute("role", "status");
    status.setAttribute("aria-live", "polite");
    const results = el("ol", null, "plain contacts-results");
    results.id = "contacts-results";
    const close = el("button", "Close", "close");
    close.type = "button";
    const foot = el("div", null, "row");
    foot.append(close);
    box.append(form, status, results, foot);
    form.addEventListener("submit", (e) => { e.preventDefault(); act(search); });
    return box;
  }

  function fillChannels(channels) {
    const select = $("contacts-channel");
    if (select.options.length > 1) return;
    for (const name of channels) {
      const opt = el("option", name);
      opt.value = name;
      select.append(opt);
    }
  }

  function resultItem(group) {
    const item = el("li", null, "contact-result");
    const first = group.conversations[0];
    const name = group.contact && group.contact.name ? group.contact.name : first.display_name;
    item.dataset.contact = group.contact ? group.contact.id : "";
    const head = el("div", null, "row");
    head.append(el("strong", name), el("span", group.contact ? "contact · " + group.conversations.length + " conversations" : "one conversation", "muted"));
    const ticket = shown.ticket;
    const current = ticket ? group.conversations.some((c) => c.id === ticket.conversation_id) : false;
    if (ticket && !current) {
      head.append(button("Link to this ticket", async () => {
        await api("/api/contacts/link", { body: { conversation_id: ticket.conversation_id, with_conversation_id: first.id } });
        toast("Linked: " + name + " and " + ticket.display_name + ".");
        await load(shown.ticket);
        await search();
      }, "Link " + name + " to the open ticket"));
    } else if (current) head.append(el("span", "this ticket's customer", "badge"));
    const list = el("ul", null, "plain");
    for (const c of group.conversations) {
      const line = el("li", null, c.matched ? "matched" : "");
      line.dataset.conversation = c.id;
      line.append(el("strong", c.channel), document.createTextNode(" · " + c.display_name), el("span", " · " + when(c.last_message_at), "muted"));
      if (c.open_ticket_id && !(ticket && c.open_ticket_id === ticket.id)) line.append(" ", button("Open", () => { $("contacts").close(); return openTicket(c.open_ticket_id); }, "Open ticket of " + c.display_name));
      list.append(line);
    }
    item.append(head, list);
    return item;
  }

  async function search() {
    const params = new URLSearchParams({ q: $("contacts-q").value, channel: $("contacts-channel").value });
    const status = $("contacts-status");
    let data;
    try { data = await api("/api/contacts?" + params.toString()); } catch (err) { formStatus(status, err.message, false); return; }
    fillChannels(data.channels);
    const list = $("contacts-results");
    list.replaceChildren(...data.results.map(resultItem));
    const asked = $("contacts-q").value.trim() || $("contacts-channel").value;
    formStatus(status, !asked ? "Type a name, phone, email or conversation id, or pick a channel."
      : data.results.length ? data.results.length + " found" + (data.more ? "; there are more: narrow the search." : ".") : "Nothing found.", true);
  }

  function openSearch() {
    const box = $("contacts");
    if (!box.open) box.showModal();
    $("contacts-q").focus();
    return search();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const opener = el("button", "Contacts");
    opener.type = "button";
    opener.id = "contacts-open";
    opener.setAttribute("aria-haspopup", "dialog");
    const top = document.querySelector("header.top");
    top.insertBefore(opener, $("account-open") || top.querySelector("form"));
    document.body.appendChild(dialog());
    modal("contacts", opener, () => { formStatus($("contacts-status"), "", true); return search(); });
  });
})();
