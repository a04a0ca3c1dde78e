// tasktoolkit pages: local times, and a live page while anything on it is active.
//
// The server draws everything (the timeline is SVG made on the server). This
// script only fetches and redraws: it waits on the JSON of a record with
// "Prefer: wait" (one wait at a time), and when that record changed (or the
// wait is over) it fetches this page again and swaps its live part in. It
// stops once the page says nothing on it is active (no data-watch).
(function () {
  "use strict";

  var MIN_ROUND_MS = 1000; // at most one redraw a second, however fast things move
  var MAX_BACKOFF_MS = 30000;

  function two(n) { return (n < 10 ? "0" : "") + n; }

  function localTime(iso, withDate, tenths) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) { return null; }
    var time = two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
    if (tenths) { time += "." + Math.floor(d.getMilliseconds() / 100); }
    if (!withDate) { return time; }
    return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + " " + time;
  }

  // Times are written in UTC by the server; show them in the viewer's zone,
  // with the UTC time kept on hover.
  function localize(root) {
    var times = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var el = times[i];
      var shown = localTime(el.getAttribute("datetime"), true);
      if (shown === null) { continue; }
      if (!el.title) { el.title = el.textContent; }
      el.textContent = shown;
    }
    var ticks = root.querySelectorAll("text[data-t]");
    for (var j = 0; j < ticks.length; j++) {
      var label = localTime(ticks[j].getAttribute("data-t"), false, ticks[j].hasAttribute("data-fraction"));
      // the tick's <title> child (UTC) stays: only its first text node changes
      if (label !== null && ticks[j].firstChild) { ticks[j].firstChild.nodeValue = label; }
    }
    var zone = root.querySelectorAll(".tt-zone");
    var name = "";
    try { name = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { name = ""; }
    for (var k = 0; k < zone.length; k++) { zone[k].textContent = name ? "times in " + name : "local times"; }
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  function note(live, text) {
    var el = live.querySelector(".tt-live-note");
    if (el) { el.textContent = text; }
  }

  // A traceback someone opened stays open across a redraw.
  function detailsKey(el) {
    var task = el.closest("[data-task]");
    var attempt = el.closest("[data-attempt]");
    return (task ? task.getAttribute("data-task") : "") + "/" +
      (attempt ? attempt.getAttribute("data-attempt") : "");
  }

  function openDetails(root) {
    var open = {};
    var found = root.querySelectorAll("details[open]");
    for (var i = 0; i < found.length; i++) { open[detailsKey(found[i])] = true; }
    return open;
  }

  function reopen(root, open) {
    var found = root.querySelectorAll("details");
    for (var i = 0; i < found.length; i++) {
      if (open[detailsKey(found[i])]) { found[i].open = true; }
    }
  }

  async function redraw(live) {
    var reply = await fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-store" });
    if (!reply.ok) { throw new Error("HTTP " + reply.status); }
    var parsed = new DOMParser().parseFromString(await reply.text(), "text/html");
    var fresh = parsed.getElementById("tt-live");
    if (!fresh) { throw new Error("the page has no live part"); }
    var adopted = document.importNode(fresh, true);
    localize(adopted);
    reopen(adopted, openDetails(live));
    live.replaceWith(adopted);
    if (parsed.title) { document.title = parsed.title; }
    return adopted;
  }

  async function follow(live) {
    var backoff = 1000;
    while (live && live.getAttribute("data-watch")) {
      var started = Date.now();
      var headers = {
        Accept: "application/json",
        Prefer: "wait=" + (live.getAttribute("data-wait") || "20")
      };
      var etag = live.getAttribute("data-etag");
      if (etag) { headers["If-None-Match"] = etag; }
      try {
        var reply = await fetch(live.getAttribute("data-watch"), { headers: headers, cache: "no-store" });
        await reply.text();
        if (reply.status >= 500) { throw new Error("HTTP " + reply.status); }
        if (reply.status !== 304) { live = await redraw(live); }
        backoff = 1000;
        if (!reply.headers.has("Preference-Applied")) {
          // the server holds only so many waits at once: this one was answered at
          // once, so look again later rather than every second
          await sleep(1000 * (parseInt(reply.headers.get("Retry-After"), 10) || 5));
        }
      } catch (error) {
        note(live, "Live updates paused (" + error.message + "); trying again.");
        await sleep(backoff);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        continue;
      }
      var spent = Date.now() - started;
      if (spent < MIN_ROUND_MS) { await sleep(MIN_ROUND_MS - spent); }
    }
  }

  function start() {
    localize(document);
    var live = document.getElementById("tt-live");
    if (live) { follow(live); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
