// Times in the viewer's time zone: every <time datetime="..."> the server wrote in UTC is shown in the zone
// chosen in the header (remembered in this browser; the browser's own zone at first). UTC stays on hover
// (the element's title). textContent only: nothing from the server becomes markup.
(function () {
  "use strict";
  var KEY = "sb-console-tz";
  var browserZone = (Intl.DateTimeFormat().resolvedOptions().timeZone) || "UTC";
  var COMMON = ["UTC", "America/New_York", "America/Chicago", "America/Denver", "America/Phoenix",
                "America/Los_Angeles", "America/Anchorage", "Pacific/Honolulu", "Europe/London", "Europe/Berlin",
                "Asia/Kolkata", "Asia/Tokyo", "Australia/Sydney"];

  function chosen() {
    try { return window.localStorage.getItem(KEY) || browserZone; } catch (e) { return browserZone; }
  }

  function format(date, zone) {
    var parts = {};
    new Intl.DateTimeFormat("en-US", {
      timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
      second: "2-digit", hourCycle: "h23", timeZoneName: "short"
    }).formatToParts(date).forEach(function (p) { parts[p.type] = p.value; });
    return parts.year + "-" + parts.month + "-" + parts.day + " " + parts.hour + ":" + parts.minute + ":" +
      parts.second + " " + parts.timeZoneName;
  }

  function apply(root) {
    var zone = chosen();
    (root || document).querySelectorAll("time[datetime]").forEach(function (t) {
      var date = new Date(t.getAttribute("datetime"));
      if (!isNaN(date.getTime())) t.textContent = format(date, zone);
    });
  }

  window.sbFormatTime = function (ms) { return format(new Date(ms), chosen()); };
  window.sbApplyZone = apply;

  function setUp() {
    var select = document.getElementById("tz");
    if (select) {
      var zones = [browserZone].concat(COMMON.filter(function (z) { return z !== browserZone; }));
      var current = chosen();
      if (zones.indexOf(current) < 0) zones.unshift(current);
      zones.forEach(function (z) {
        var option = document.createElement("option");
        option.value = z;
        option.textContent = z === browserZone ? z + " (this device)" : z;
        option.selected = z === current;
        select.appendChild(option);
      });
      select.addEventListener("change", function () {
        try { window.localStorage.setItem(KEY, select.value); } catch (e) { /* private mode: this page only */ }
        apply(document);
      });
    }
    apply(document);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setUp);
  else setUp();
})();
