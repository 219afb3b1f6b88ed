// Refreshes the status page every 5 s in place: fetches /status with the
// session cookie and swaps its <main>. Paused while the tab is hidden; a
// lost session reloads the page, which then shows the login form.
(function () {
  "use strict";
  var period = 5000;
  function refresh() {
    if (document.hidden) { return; }
    fetch("/status", { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (r.status === 401 || r.status === 403) { location.reload(); return null; }
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (!html) { return; }
      var next = new DOMParser().parseFromString(html, "text/html").getElementById("status");
      var cur = document.getElementById("status");
      if (next && cur) { cur.replaceWith(next); }
    }).catch(function () {
      var s = document.getElementById("refresh");
      if (s) { s.textContent = "refresh failed; retrying"; }
    });
  }
  setInterval(refresh, period);
  document.addEventListener("visibilitychange", refresh);
})();
