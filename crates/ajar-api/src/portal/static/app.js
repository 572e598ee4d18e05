// ajar portal: live updates over server-sent events, and countdowns.
// Every page works without this script; it only saves reloading.
(function () {
  "use strict";

  function remaining(secs) {
    if (secs <= 0) return "ending now";
    var h = Math.floor(secs / 3600), m = Math.floor(secs / 60) % 60, s = secs % 60;
    var pad = function (n) { return n < 10 ? "0" + n : "" + n; };
    if (h > 0) return h + "h " + pad(m) + "m left";
    if (m > 0) return m + "m " + pad(s) + "s left";
    return s + "s left";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-ends-at]").forEach(function (el) {
      var secs = Math.round((Date.parse(el.getAttribute("data-ends-at")) - now) / 1000);
      el.textContent = remaining(secs);
      el.classList.toggle("soon", secs > 0 && secs <= 60);
      el.classList.toggle("ended", secs <= 0);
    });
  }
  tick();
  setInterval(tick, 1000);

  var regions = function () { return document.querySelectorAll("[data-live]"); };
  if (!regions().length || !window.EventSource || !window.fetch) return;

  var status = document.getElementById("live-status");
  var timer = null;

  // A region someone is typing into is left alone until they are done.
  function busy(region) {
    var active = document.activeElement;
    if (active && region.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) return true;
    return Array.prototype.some.call(region.querySelectorAll("input[type=text], textarea"), function (i) {
      return i.value.trim() !== "";
    });
  }

  function schedule(delay) {
    if (timer === null) timer = setTimeout(refresh, delay);
  }

  function refresh() {
    timer = null;
    fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.redirected || !response.ok) { location.reload(); return null; }
        return response.text();
      })
      .then(function (text) {
        if (text === null) return;
        var fresh = new DOMParser().parseFromString(text, "text/html").querySelectorAll("[data-live]");
        var retry = false;
        regions().forEach(function (region, i) {
          if (!fresh[i]) return;
          if (busy(region)) { retry = true; return; }
          region.replaceWith(document.importNode(fresh[i], true));
        });
        tick();
        if (status) status.textContent = "Updated " + new Date().toLocaleTimeString();
        if (retry) schedule(2000);
      })
      .catch(function () { schedule(3000); });
  }

  var source = new EventSource("/events");
  source.addEventListener("change", function () { schedule(150); });
})();
