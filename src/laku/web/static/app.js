// Progressive enhancement only: every page works without it.
(function () {
  "use strict";
  function fmt(seconds, lang) {
    var d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
    var m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    var u = lang === "en" ? ["d", "h", "m", "s"] : ["h", "j", "m", "d"];
    return (d ? d + u[0] + " " : "") + h + u[1] + " " + m + u[2] + " " + s + u[3];
  }
  var lang = document.documentElement.lang;
  var clocks = Array.prototype.slice.call(document.querySelectorAll("[data-countdown]"));
  var started = Date.now();
  clocks.forEach(function (el) { el.dataset.base = el.dataset.countdown; });
  function tick() {
    var gone = Math.floor((Date.now() - started) / 1000);
    clocks.forEach(function (el) {
      el.textContent = fmt(Math.max(0, parseInt(el.dataset.base, 10) - gone), lang);
    });
  }
  if (clocks.length) { tick(); setInterval(tick, 1000); }

  var page = document.querySelector("[data-live]");
  var words = document.getElementById("i18n-live");
  if (!page || !window.fetch) return;
  function set(selector, value, root) {
    var el = (root || document).querySelector(selector);
    if (el && value !== undefined) el.textContent = value;
  }
  function refresh() {
    fetch(page.dataset.live, { headers: { accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (live) {
        if (!live) return;
        set("[data-field=paidQuantity]", live.paidQuantity);
        set("[data-field=quantityToMoq]", live.quantityToMoq);
        set("[data-field=currentUnitPrice]", live.currentUnitPrice);
        var bar = document.getElementById("progress");
        if (bar) bar.value = live.fillPercent;
        live.variants.forEach(function (v) {
          var row = document.querySelector('[data-variant="' + v.variantId + '"]');
          if (!row) return;
          var radio = row.querySelector("input");
          radio.disabled = !v.canJoin;
          if (!v.canJoin) radio.checked = false;
          set("[data-field=unitPrice]", v.unitPrice, row);
          set("[data-field=availability]", v.canJoin
            ? v.availableQuantity + " " + words.dataset.available : words.dataset.soldOut, row);
        });
      })
      .catch(function () {});
  }
  setInterval(refresh, 5000);
})();
