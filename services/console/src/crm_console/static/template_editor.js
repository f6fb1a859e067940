// Maintenance > Templates' editor: the stages follow Visible at, and the preview's iframe is
// filled by posting the editor's form into it once the console said the text renders.
(function () {
  "use strict";
  var form = document.getElementById("template-form");
  if (!form) { return; }
  var visibleAt = document.getElementById("visible_at");
  var showStages = function () {
    document.querySelectorAll("fieldset.template-stages").forEach(function (set) {
      set.hidden = set.getAttribute("data-visible-at") !== visibleAt.value;
    });
  };
  visibleAt.addEventListener("change", function () {
    showStages();
    // The records to preview with are of the kind Visible at names.
    var search = document.getElementById("record-search");
    if (search && window.htmx) { window.htmx.trigger(search, "submit"); }
  });
  // A new record list: preview with its first record.
  document.body.addEventListener("htmx:afterSettle", function (evt) {
    var target = evt.detail.target;
    if (target && target.id === "preview-record-choices") {
      window.htmx.trigger(document.getElementById("preview_record"), "change");
    }
  });
  document.body.addEventListener("htmx:afterSwap", function (evt) {
    var target = evt.detail.target;
    if (!target || target.id !== "template-preview") { return; }
    var frame = target.querySelector("iframe[name]");
    if (!frame) { return; }
    var action = form.getAttribute("action");
    form.setAttribute("action", form.getAttribute("data-frame-action"));
    form.setAttribute("target", frame.getAttribute("name"));
    try {
      form.submit(); // no submit event: htmx and the page stay as they are
    } finally {
      form.setAttribute("action", action);
      form.removeAttribute("target");
    }
  });
})();
