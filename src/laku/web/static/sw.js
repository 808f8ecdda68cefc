// The service worker (served at /sw.js, scope /): shows each Web Push notice the platform sends
// (its decrypted payload is JSON {key, notificationId, title, body}) and opens the notices page
// when one is clicked.
"use strict";

self.addEventListener("push", function (event) {
  var notice = {};
  try {
    notice = event.data ? event.data.json() : {};
  } catch (e) {
    notice = { body: event.data ? event.data.text() : "" };
  }
  event.waitUntil(
    self.registration.showNotification(notice.title || "Laku", {
      body: notice.body || "",
      tag: notice.key || "",
      data: { url: "/me/notifications" }
    })
  );
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var target = new URL("/me/notifications", self.location.origin).href;
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (windows) {
      for (var i = 0; i < windows.length; i++) {
        if (windows[i].url === target && "focus" in windows[i]) return windows[i].focus();
      }
      return self.clients.openWindow("/me/notifications");
    })
  );
});
