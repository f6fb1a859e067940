// The console's shared behaviour: CSRF on every htmx and fetch request, auto-submitting
// selects, and a hook for the page scripts. No inline script anywhere (CSP: script-src 'self').
(function () {
  "use strict";
  var csrf = function () {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  };
  window.crmConsole = {
    csrf: csrf,
    // fetch() with the CSRF header and the page's cookies; answers as text.
    send: function (method, url, body) {
      var headers = { "X-CSRFToken": csrf(), "HX-Request": "true" };
      if (body && !(body instanceof FormData)) {
        headers["Content-Type"] = "application/x-www-form-urlencoded";
        body = new URLSearchParams(body);
      }
      return fetch(url, { method: method, headers: headers, body: body, credentials: "same-origin" });
    },
    // Put a server-rendered message into the page's live region (screen readers hear it).
    say: function (html) {
      var box = document.getElementById("messages");
      if (box) { box.innerHTML = html; }
    }
  };
  document.documentElement.classList.add("js");
  document.addEventListener("htmx:configRequest", function (evt) {
    evt.detail.headers["X-CSRFToken"] = csrf();
  });
  // Error answers (4xx) still carry a message to show: let htmx swap them into their target.
  document.addEventListener("htmx:beforeSwap", function (evt) {
    var status = evt.detail.xhr.status;
    if (status >= 400 && status < 500) {
      evt.detail.shouldSwap = true;
      evt.detail.isError = false;
      var target = evt.detail.requestConfig && evt.detail.requestConfig.elt &&
        evt.detail.requestConfig.elt.getAttribute("hx-target-error");
      if (target) { evt.detail.target = document.querySelector(target); }
    }
  });
  // Forms that delete ask first (data-confirm holds the question; no inline script needed).
  document.addEventListener("submit", function (evt) {
    var form = evt.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { evt.preventDefault(); }
  }, true);
  document.addEventListener("change", function (evt) {
    var el = evt.target;
    if (el && el.matches && el.matches("select[data-autosubmit]") && el.form) {
      el.form.requestSubmit ? el.form.requestSubmit() : el.form.submit();
    }
  });
})();
