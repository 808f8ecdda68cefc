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
        set("[data-field=buyerCount]", live.buyerCount);
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

// Web Push: offered only where the browser has service workers and Push.
(function () {
  "use strict";
  var button = document.getElementById("push-on");
  var status = document.getElementById("push-status");
  if (!button || !("serviceWorker" in navigator) || !("PushManager" in window) || !window.fetch) {
    return;
  }
  function say(text) {
    status.textContent = text;
    status.hidden = false;
  }
  function keyBytes(base64url) {
    var raw = atob(base64url.replace(/-/g, "+").replace(/_/g, "/"));
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }
  function stored(endpoint) {
    return Array.prototype.some.call(document.querySelectorAll("[data-endpoint]"), function (el) {
      return el.dataset.endpoint === endpoint;
    });
  }
  function json(response) {
    return response.json().catch(function () { return {}; }).then(function (body) {
      if (!response.ok) throw new Error(body.message || response.status);
      return body;
    });
  }
  function subscribe(registration) {
    return registration.pushManager.getSubscription().then(function (existing) {
      if (existing) return existing;
      return fetch(button.dataset.keyUrl, { credentials: "same-origin" })
        .then(json)
        .then(function (key) {
          return registration.pushManager.subscribe({
            userVisibleOnly: true,
            applicationServerKey: keyBytes(key.publicKey)
          });
        });
    });
  }
  function turnOn() {
    button.disabled = true;
    say(button.dataset.working);
    navigator.serviceWorker.register("/sw.js", { scope: "/" })
      .then(function () { return navigator.serviceWorker.ready; })
      .then(subscribe)
      .then(function (subscription) {
        return fetch(button.dataset.subscribeUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { "content-type": "application/json", "x-csrf-token": button.dataset.csrf },
          body: JSON.stringify(subscription.toJSON())
        }).then(json);
      })
      .then(function (saved) {
        button.hidden = true;
        say(saved.message);
      })
      .catch(function (error) {
        button.disabled = false;
        say(button.dataset.failed + ": " + (error && error.message ? error.message : error));
      });
  }
  button.addEventListener("click", turnOn);
  // Already on in this browser (its subscription is among the buyer's): say so, no button.
  navigator.serviceWorker.getRegistration("/")
    .then(function (registration) {
      return registration ? registration.pushManager.getSubscription() : null;
    })
    .then(function (subscription) {
      if (subscription && stored(subscription.endpoint)) say(status.dataset.on || "");
      else button.hidden = false;
    })
    .catch(function () { button.hidden = false; });
})();
