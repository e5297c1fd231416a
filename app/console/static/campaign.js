// The campaign page follows the dialing without a reload: every 3 s the part that changes (progress,
// attempts, decisions, contacts) is fetched again from /live, unless the viewer is typing in it (a reason,
// a filter). The server renders it (escaped as every page); times are then put in the viewer's zone.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.fetch) return;
  var url = live.getAttribute("data-live");
  var busy = false;

  function typing() {
    var el = document.activeElement;
    return el && live.contains(el) && (el.tagName === "INPUT" || el.tagName === "SELECT" || el.tagName === "TEXTAREA");
  }

  function refresh() {
    if (busy || document.hidden || typing()) return;
    busy = true;
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html !== null && !typing()) {
          var next = new DOMParser().parseFromString(html, "text/html");
          live.replaceChildren.apply(live, Array.prototype.slice.call(next.body.childNodes));
          if (window.sbApplyZone) window.sbApplyZone(live);
        }
      })
      .catch(function () { /* offline for a moment: the next tick tries again */ })
      .then(function () { busy = false; });
  }

  window.setInterval(refresh, 3000);
})();
