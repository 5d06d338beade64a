// Live progress of a running sync on the mapping page: polls the JSON API (same session cookie).
(function () {
  var box = document.getElementById("progress");
  if (!box) return;
  var text = document.getElementById("progress-text");
  function tick() {
    fetch(box.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) {
        if (!p) return;
        if (p.running) {
          box.classList.remove("idle");
          text.textContent = "syncing: " + p.sent + " of " + p.total + " members sent, " + p.retries +
            " retries, " + Math.round(p.waited_seconds) + " s waiting for rate limits";
        } else {
          box.classList.add("idle");
          text.textContent = "no sync running; last outcome " + (p.outcome || "–") +
            (p.added != null ? " (added " + p.added + ", removed " + p.removed + ", rejected " + p.rejected + ")" : "");
        }
      })
      .catch(function () {});
  }
  tick();
  setInterval(tick, 1000);
})();
