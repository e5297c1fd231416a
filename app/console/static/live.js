// Live calls: poll /console/live.json every 2 s and re-render the list. DOM built with textContent
// only (no innerHTML), so nothing a caller says can become markup.
(function () {
  "use strict";
  var root = document.getElementById("live-calls");
  var status = document.getElementById("live-status");
  if (!root) return;
  var source = root.getAttribute("data-source");
  var PERIOD_MS = 2000;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function clock(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    return h ? h + ":" + two(m) + ":" + two(sec) : two(m) + ":" + two(sec);
  }

  function utc(ms) {
    if (ms !== null && ms !== undefined && window.sbFormatTime) return window.sbFormatTime(ms);
    if (ms === null || ms === undefined) return "–";
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function speaker(name) {
    if (name === "agent") return "Agent";
    if (name === "caller") return "Caller";
    return name ? name.charAt(0).toUpperCase() + name.slice(1) : "";
  }

  function line(l) {
    var item = el("li", "line " + l.speaker + (l.interrupted ? " interrupted" : ""));
    item.appendChild(el("span", "offset", clock(l.offset_ms)));
    item.appendChild(document.createTextNode(" "));
    item.appendChild(el("span", "speaker", speaker(l.speaker)));
    item.appendChild(document.createTextNode(" "));
    var text = el("span", "text", l.text);
    if (l.interrupted) {
      text.appendChild(document.createTextNode(" "));
      var badge = el("span", "badge", "cut off: barge-in");
      badge.setAttribute("aria-hidden", "true");
      text.appendChild(badge);
      text.appendChild(el("span", "visually-hidden", " (cut off: the caller spoke over this line)"));
    }
    item.appendChild(text);
    return item;
  }

  function call(c) {
    var article = el("article", "live-call");
    var headingId = "live-" + c.call_sid;
    article.setAttribute("aria-labelledby", headingId);
    var h2 = el("h2");
    h2.id = headingId;
    h2.appendChild(el("span", "sid", c.call_sid));
    article.appendChild(h2);
    var meta = el("p", "meta", c.direction + " · from " + (c.from || "–") + " to " + (c.to || "–") +
      " · started " + utc(c.started_at_ms));
    if (c.stale) {
      meta.appendChild(document.createTextNode(" · "));
      meta.appendChild(el("strong", null, "stream lost, awaiting takeover or archive"));
    }
    article.appendChild(meta);
    if (c.lines.length) {
      var list = el("ol", "timeline");
      c.lines.forEach(function (l) { list.appendChild(line(l)); });
      article.appendChild(list);
    } else {
      article.appendChild(el("p", null, "No lines yet."));
    }
    return article;
  }

  function render(data) {
    var nodes = data.calls.length ? data.calls.map(call) : [el("p", "empty", "No calls in progress.")];
    root.replaceChildren.apply(root, nodes);
    root.setAttribute("data-updated", data.at);
    status.textContent = "Updated " + utc(Date.parse(data.at)) + ".";
  }

  function poll() {
    fetch(source, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) {
          return response.json().then(function (body) {
            var reason = encodeURIComponent(body.reason || "");
            window.location.assign("/console/login?next=/console/live&reason=" + reason);
            return null;
          });
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        if (data === null) return;
        render(data);
        window.setTimeout(poll, PERIOD_MS);
      })
      .catch(function (error) {
        status.textContent = "Could not refresh (" + error.message + "); retrying.";
        window.setTimeout(poll, PERIOD_MS);
      });
  }

  window.setTimeout(poll, PERIOD_MS);
})();
