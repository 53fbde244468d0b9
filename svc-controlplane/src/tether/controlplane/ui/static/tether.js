// The UI's own behaviour. The Content-Security-Policy allows no inline script, so what a
// page needs beyond htmx lives here, bound to markup by data attributes.
(function () {
  "use strict";

  // Only http(s) URLs are ever fetched or linked (the server already drops others).
  function isWebUrl(value) {
    try {
      const url = new URL(value, window.location.href);
      return url.protocol === "http:" || url.protocol === "https:";
    } catch (err) {
      return false;
    }
  }

  // Read each object straight from the bucket (the control plane never serves the bytes),
  // drop the bytes an earlier object already holds, and decode the whole as UTF-8 once,
  // so a character split between two objects survives.
  async function readLogsFromBucket(pre) {
    const box = pre.closest("#log-links");
    const note = box ? box.querySelector(".log-note") : null;
    const parts = [];
    try {
      for (const piece of JSON.parse(pre.dataset.urls)) {
        if (!isWebUrl(piece.url)) continue;
        const resp = await fetch(piece.url);
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        parts.push(new Uint8Array(await resp.arrayBuffer()).subarray(piece.skip));
      }
    } catch (err) {
      if (note) {
        note.textContent = "This page could not read the logs from your bucket (" + err.message +
          "; the bucket may need a CORS rule allowing GET from this site). The links below open them.";
      }
    }
    pre.textContent = await new Blob(parts).text();
  }

  // A sign-in link (`/signin#token=...`, printed by `tether dev`) carries the token in the
  // fragment, which browsers never send: fill the form, forget the fragment, post it.
  function signInFromFragment(root) {
    const form = root.querySelector("form[data-signin]");
    if (!form || !window.location.hash.startsWith("#token=")) return;
    const token = decodeURIComponent(window.location.hash.slice("#token=".length));
    history.replaceState(null, "", window.location.pathname);
    form.querySelector("input[name=token]").value = token;
    form.submit();
  }

  // The asset graph: a checked asset is highlighted in the picture, and clicking a box with
  // Shift (or Ctrl/Cmd) held checks it instead of opening its page.
  function syncAssetSelection() {
    for (const box of document.querySelectorAll("input[data-asset-key]")) {
      for (const node of document.querySelectorAll("g.asset-node")) {
        if (node.dataset.asset === box.value) node.classList.toggle("selected", box.checked);
      }
    }
  }

  function setUpAssetGraph(scope) {
    const form = document.getElementById("selection");
    if (!form || form.dataset.bound) return;
    form.dataset.bound = "1";
    form.addEventListener("change", syncAssetSelection);
    for (const link of document.querySelectorAll("svg.asset-dag a")) {
      link.addEventListener("click", (event) => {
        if (!(event.shiftKey || event.ctrlKey || event.metaKey)) return;
        const node = link.querySelector("g.asset-node");
        const box = Array.from(form.querySelectorAll("input[data-asset-key]")).find(
          (input) => node && input.value === node.dataset.asset
        );
        if (!box || box.disabled) return;
        event.preventDefault();
        box.checked = !box.checked;
        syncAssetSelection();
      });
    }
    syncAssetSelection();
  }

  function setUp(root) {
    const scope = root && root.querySelectorAll ? root : document;
    const found = Array.from(scope.querySelectorAll("pre.log[data-urls]"));
    if (scope.matches && scope.matches("pre.log[data-urls]")) found.push(scope);
    for (const pre of found) {
      if (pre.dataset.started) continue;
      pre.dataset.started = "1";
      readLogsFromBucket(pre);
    }
    signInFromFragment(document);
    setUpAssetGraph(scope);
  }

  // A live refresh of the run page appends only the new events to the event table: show
  // the table, drop a row the page already had, and keep only the newest rows it allows.
  function trimEventRows(tbody) {
    const table = tbody.closest("table");
    if (!table) return;
    table.hidden = false;
    const seen = new Set();
    for (const row of Array.from(tbody.rows).reverse()) {
      const id = row.dataset.eventId;
      if (id && seen.has(id)) row.remove();
      else if (id) seen.add(id);
    }
    const max = parseInt(table.dataset.maxRows || "0", 10);
    while (max > 0 && tbody.rows.length > max) tbody.deleteRow(0);
  }

  document.addEventListener("htmx:oobAfterSwap", (event) => {
    const target = event.detail && event.detail.target;
    if (target && target.id === "event-rows") trimEventRows(target);
  });

  // htmx fires htmx:load on the page and on every piece of content it swaps in.
  document.addEventListener("htmx:load", (event) => setUp(event.target));
  document.addEventListener("DOMContentLoaded", () => setUp(document));
})();
