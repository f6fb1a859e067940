// Attachments tab: upload with a progress bar. The form posts with XMLHttpRequest (its upload
// progress events move the <progress>); the answer is the tab again, swapped in by htmx.
// Without this script the same form is a plain multipart post.
(function () {
  "use strict";
  if (window.crmUpload) { return; }
  window.crmUpload = true;

  function say(form, text) {
    var status = form.querySelector("[data-upload-status]");
    if (status) { status.textContent = text; }
  }

  function finish(reached) {
    // The new tab's bar shows how far the upload got (its max once it is complete).
    var bar = document.querySelector("#record-tab-attachments progress");
    if (bar && reached.total > 0) {
      bar.max = reached.total;
      bar.value = reached.loaded;
      bar.hidden = false;
    }
  }

  document.addEventListener("submit", function (evt) {
    var form = evt.target;
    if (!form.matches || !form.matches("form[data-upload]") || !window.FormData || !window.XMLHttpRequest) { return; }
    evt.preventDefault();
    var tab = form.closest(".record-tab");
    var bar = form.querySelector("progress");
    var button = form.querySelector("button[type=submit]");
    var reached = { loaded: 0, total: 0 };
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-CSRFToken", window.crmConsole ? window.crmConsole.csrf() : "");
    xhr.setRequestHeader("HX-Request", "true");
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) { return; }
      reached = { loaded: e.loaded, total: e.total };
      bar.max = e.total;
      bar.value = e.loaded;
    });
    xhr.upload.addEventListener("load", function () {
      if (reached.total > 0) { reached.loaded = reached.total; bar.value = bar.max; }
      say(form, form.getAttribute("data-saving") || "");
    });
    xhr.addEventListener("load", function () {
      if (xhr.getResponseHeader("HX-Redirect")) {
        window.location.href = xhr.getResponseHeader("HX-Redirect");
        return;
      }
      if (window.htmx && tab && xhr.responseText) {
        window.htmx.swap(tab, xhr.responseText, { swapStyle: "outerHTML" });
        finish(reached);
        if (xhr.status < 400) { document.dispatchEvent(new CustomEvent("crmRecordChanged")); }
      } else {
        window.location.reload();
      }
    });
    xhr.addEventListener("error", function () {
      if (button) { button.disabled = false; }
      say(form, form.getAttribute("data-failed") || "The upload failed.");
    });
    if (button) { button.disabled = true; }
    bar.hidden = false;
    bar.value = 0;
    say(form, "");
    xhr.send(new FormData(form));
  });
})();

// After a change in one tab (htmx's HX-Trigger "crmRecordChanged", or an upload), the other
// tabs already loaded (the timeline at least) are loaded again when they are next opened.
(function () {
  "use strict";
  if (window.crmTabsStale) { return; }
  window.crmTabsStale = true;
  document.addEventListener("crmRecordChanged", function () {
    var panels = document.querySelectorAll('[role="tabpanel"][data-src][data-loaded]');
    Array.prototype.forEach.call(panels, function (panel) {
      if (panel.hidden) { panel.removeAttribute("data-loaded"); }
    });
  });
})();
