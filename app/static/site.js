// The pages' only script: signing in with a token, and counting a page's view.
//
// A post or article page counts its view here, never by its GET: once the page is
// visible, exactly once per page load, it sends POST /api/<kind>/<id>/view, then shows
// the new view count without a reload. Prefetchers and crawlers that run no script, and
// tabs opened in the background and never looked at, count nothing.
"use strict";

(function () {
  var TOKEN_KEY = "counters.token";
  // Waits between polls of the counts after the beacon (ms): bounded, about 5 s in all.
  var POLL_DELAYS_MS = [0, 100, 200, 400, 800, 1500, 2500];

  function storedToken() {
    try {
      return window.localStorage.getItem(TOKEN_KEY);
    } catch (e) {  // storage disabled: everyone is anonymous
      return null;
    }
  }

  function setToken(token) {
    try {
      if (token) {
        window.localStorage.setItem(TOKEN_KEY, token);
      } else {
        window.localStorage.removeItem(TOKEN_KEY);
      }
    } catch (e) {
      // storage disabled: nothing to keep or clear
    }
    showSignedIn();
  }

  function showSignedIn() {
    var signedIn = Boolean(storedToken());
    document.querySelectorAll("[data-signed-in]").forEach(function (el) {
      el.hidden = !signedIn;
    });
    document.querySelectorAll("[data-signed-out]").forEach(function (el) {
      el.hidden = signedIn;
    });
  }

  function initSignIn() {
    document.querySelectorAll("[data-sign-out]").forEach(function (link) {
      link.addEventListener("click", function (event) {
        event.preventDefault();
        setToken(null);
      });
    });
    var form = document.querySelector("[data-sign-in-form]");
    if (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var input = form.querySelector("input");
        var token = input.value.trim();
        if (token) {
          setToken(token);
          input.value = "";
        }
      });
    }
    showSignedIn();
  }

  // sendBeacon cannot carry headers: a signed-in visitor's view goes by fetch, with the
  // token, so the server can tell who viewed (an author's own views, say).
  function sendView(url) {
    var token = storedToken();
    var init = { method: "POST", keepalive: true, credentials: "same-origin" };
    if (token) {
      init.headers = { Authorization: "Bearer " + token };
      return fetch(url, init);
    }
    if (navigator.sendBeacon && navigator.sendBeacon(url)) {
      return Promise.resolve(null);  // queued; its answer is not ours to see
    }
    return fetch(url, init);
  }

  function showCounts(entry, counts) {
    entry.querySelectorAll("[data-count]").forEach(function (el) {
      var value = counts[el.dataset.count];
      if (typeof value === "number") {
        el.dataset.value = String(value);
        el.textContent = value.toLocaleString("en-US");
      }
    });
  }

  // Poll the counts until the view count differs from the one the page was served with;
  // a view that added nothing (the server may decline to count it) leaves the page as is.
  function refreshCounts(entry) {
    var shown = Number(entry.querySelector('[data-count="view_count"]').dataset.value);
    var attempt = 0;

    function again() {
      attempt += 1;
      if (attempt < POLL_DELAYS_MS.length) {
        window.setTimeout(poll, POLL_DELAYS_MS[attempt]);
      } else {
        entry.dataset.beacon = "unchanged";
      }
    }

    function poll() {
      fetch(entry.dataset.countsUrl, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          return response.ok ? response.json() : null;
        })
        .then(function (counts) {
          if (counts && counts.view_count !== shown) {
            showCounts(entry, counts);
            entry.dataset.beacon = "shown";
          } else {
            again();
          }
        }, again);
    }

    window.setTimeout(poll, POLL_DELAYS_MS[0]);
  }

  function countView(entry) {
    entry.dataset.beacon = "sent";
    entry.dataset.beaconsSent = String(Number(entry.dataset.beaconsSent) + 1);
    sendView(entry.dataset.viewUrl).then(
      function () {
        refreshCounts(entry);
      },
      function () {
        entry.dataset.beacon = "failed";
      }
    );
  }

  function whenVisible(action) {
    if (document.visibilityState === "visible") {
      action();
      return;
    }
    function onChange() {
      if (document.visibilityState === "visible") {
        document.removeEventListener("visibilitychange", onChange);
        action();
      }
    }
    document.addEventListener("visibilitychange", onChange);
  }

  function initBeacon() {
    var entry = document.querySelector("[data-view-url]");
    if (!entry) {
      return;
    }
    entry.dataset.beacon = "hidden";  // until the page is seen
    whenVisible(function () {
      countView(entry);
    });
  }

  initSignIn();
  initBeacon();
})();
