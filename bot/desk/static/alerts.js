// Inbound spike banner, on every page with #spike-banner (the desk, analytics).
// Self-contained (no common.js needed); text goes in with textContent only.
// A dismissed spike stays hidden in this tab (sessionStorage); a new spike shows again.
"use strict";

(() => {
  const POLL_MS = 15000;
  const DISMISSED = "parley-spike-dismissed";
  const banner = document.getElementById("spike-banner");
  if (!banner) return;

  function dismissed() {
    try { return sessionStorage.getItem(DISMISSED); } catch (err) { return null; }
  }

  function usualText(usual) {
    return usual < 0.5 ? "usually almost none" : "usually about " + Math.round(usual);
  }

  function since(iso) {
    return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function show(spike) {
    if (!spike || String(spike.id) === dismissed()) {
      banner.hidden = true;
      banner.replaceChildren();
      delete banner.dataset.spike;
      return;
    }
    const text = document.createElement("span");
    text.className = "spike-text";
    text.textContent = "Inbound spike: " + spike.latest_count + " messages in the last " +
      spike.window_minutes + " minutes, " + usualText(spike.usual) + " at this hour — since " +
      since(spike.started_at);
    const close = document.createElement("button");
    close.type = "button";
    close.className = "spike-dismiss";
    close.textContent = "Dismiss";
    close.title = "Hide this alert in this tab";
    close.addEventListener("click", () => {
      try { sessionStorage.setItem(DISMISSED, String(spike.id)); } catch (err) { /* private mode */ }
      show(null);
    });
    banner.replaceChildren(text, close);
    banner.dataset.spike = spike.id;
    banner.hidden = false;
  }

  async function poll() {
    try {
      const res = await fetch("/api/alerts/active", { headers: { Accept: "application/json" } });
      if (res.status === 401) { location.href = "/login"; return; }
      if (!res.ok) return;  // keep what is shown; the next poll tries again
      show((await res.json()).active);
      banner.dataset.polls = String(Number(banner.dataset.polls || 0) + 1);  // tests wait on it
    } catch (err) { /* offline for a moment: the next poll tries again */ }
  }

  poll();
  setInterval(poll, POLL_MS);
})();
