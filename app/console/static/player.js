// The call page's player: a click on a transcript line (or a mark) seeks the recording there and plays; the
// line being heard is highlighted. Marks (barge-ins, tools, pauses) are placed along the track by time. No
// markup is built from call content (textContent and CSSOM only: the page's CSP allows no inline style).
(function () {
  "use strict";
  var audio = document.getElementById("player");
  var section = document.getElementById("recording");
  if (!audio || !section) return;
  var lines = Array.prototype.slice.call(document.querySelectorAll(".timeline .line[data-offset-ms]"));
  var offsets = lines.map(function (line) { return Number(line.getAttribute("data-offset-ms")); });
  var current = null;

  function highlight() {
    var ms = audio.currentTime * 1000;
    var found = null;
    for (var i = 0; i < lines.length; i++) {
      if (offsets[i] <= ms + 1) found = lines[i];
    }
    if (found === current) return;
    if (current) { current.classList.remove("playing"); current.removeAttribute("aria-current"); }
    current = found;
    if (current) { current.classList.add("playing"); current.setAttribute("aria-current", "true"); }
  }

  function seek(ms) {
    audio.currentTime = Math.max(0, ms) / 1000;
    highlight();
    var playing = audio.play();
    if (playing && playing.catch) playing.catch(function () { /* a browser that will not play yet: seeked only */ });
  }

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    var control = target.closest("[data-seek-ms]");
    var line = control || target.closest(".timeline .line[data-offset-ms]");
    if (!line) return;
    if (target.closest("a")) return;  // a link inside a line keeps its meaning
    seek(Number(line.getAttribute(control ? "data-seek-ms" : "data-offset-ms")));
  });
  audio.addEventListener("timeupdate", highlight);
  audio.addEventListener("seeked", highlight);

  var track = document.getElementById("track");
  var duration = Number(section.getAttribute("data-duration-ms"));
  if (track && duration > 0) {
    document.querySelectorAll(".marks .mark[data-seek-ms]").forEach(function (mark) {
      var at = Number(mark.getAttribute("data-seek-ms"));
      var tick = document.createElement("span");
      tick.className = "tick " + mark.className.replace("mark", "").trim();
      tick.title = mark.textContent;
      tick.style.left = Math.min(100, Math.max(0, (100 * at) / duration)) + "%";
      tick.addEventListener("click", function () { seek(at); });
      track.appendChild(tick);
    });
  }
})();
