// The status page's one script (served at /assets/page.js): every 10 s, while the
// tab is visible and no field has focus, fetches the same URL and swaps in its
// <main>. Without it the page works the same; reload to refresh.
(function () {
  "use strict";
  var PERIOD_MS = 10000;
  function refresh() {
    var focused = document.activeElement;
    if (document.hidden || (focused && focused.tagName === "INPUT")) return;
    fetch(location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) return;
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("main");
        var old = document.getElementById("main");
        if (fresh && old) old.replaceWith(fresh);
      })
      .catch(function () {});
  }
  setInterval(refresh, PERIOD_MS);
})();
