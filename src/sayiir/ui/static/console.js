// sayiir console: live updates over server-sent events, JSON checks, confirmations.
// No build step: plain ES2017, loaded after htmx (both deferred).
(function () {
  "use strict";

  function liveRegions(ids) {
    document.querySelectorAll("[data-live]").forEach(function (el) {
      var want = el.getAttribute("data-live");
      if (ids === null || want === "*" || ids.indexOf(want) !== -1) {
        htmx.trigger(el, "sayiir-refresh");
      }
    });
  }

  function connect() {
    var url = document.body.getAttribute("data-events");
    var indicator = document.getElementById("live");
    if (!url || !window.EventSource || !document.querySelector("[data-live]")) {
      if (indicator) indicator.hidden = true;  // nothing on this page updates itself
      return;
    }
    var source = new EventSource(url);
    source.addEventListener("open", function () {
      if (indicator) { indicator.classList.add("on"); indicator.classList.remove("off"); }
    });
    source.addEventListener("error", function () {
      if (indicator) { indicator.classList.remove("on"); indicator.classList.add("off"); }
    });
    source.addEventListener("change", function (event) {
      var data = JSON.parse(event.data);
      liveRegions(data.ids);
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  function checkJson(area) {
    var box = area.form.querySelector(".json-error");
    var button = area.form.querySelector("button[type=submit]");
    var text = area.value.trim();
    var message = "";
    if (text) {
      try { JSON.parse(text); } catch (err) { message = "Not valid JSON: " + err.message; }
    }
    if (box) { box.textContent = message; box.hidden = !message; }
    area.classList.toggle("invalid", !!message);
    if (button) button.disabled = !!message;
  }

  document.addEventListener("input", function (event) {
    if (event.target.matches && event.target.matches("textarea[data-json]")) checkJson(event.target);
  });

  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });

  // htmx requests carry the CSRF token too (htmx only reads; kept for future POSTs).
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = document.body.getAttribute("data-csrf") || "";
  });

  document.addEventListener("DOMContentLoaded", connect);
})();
