// The list view: the bulk action form shows only the argument its action needs, asks before a
// delete, and "select all" ticks every row of the page; a loaded preview gets the focus.
(function () {
  "use strict";
  function sync(root) {
    var action = root.querySelector("[data-bulk-action]");
    if (!action) { return; }
    root.querySelectorAll("[data-bulk-argument]").forEach(function (field) {
      field.hidden = field.getAttribute("data-bulk-argument").split(" ").indexOf(action.value) < 0;
    });
  }
  document.addEventListener("change", function (evt) {
    var el = evt.target;
    if (el.matches("[data-bulk-action]")) { sync(el.form); }
    if (el.matches("[data-select-all]")) {
      el.form.querySelectorAll('input[name="ids"]').forEach(function (box) { box.checked = el.checked; });
    }
  });
  document.addEventListener("htmx:confirm", function (evt) {
    var form = evt.detail.elt;
    if (!form.matches || !form.matches("#bulk-form")) { return; }
    var action = form.querySelector("[data-bulk-action]");
    if (action && action.value === "delete") {
      evt.preventDefault();
      var apply = form.querySelector("[data-bulk-apply]");
      if (window.confirm(apply.getAttribute("data-confirm-delete"))) { evt.detail.issueRequest(true); }
    }
  });
  document.addEventListener("htmx:afterSwap", function (evt) {
    if (evt.detail.target.id === "list-region") { sync(evt.detail.target); }
    if (evt.detail.target.id === "preview") {
      var heading = document.getElementById("preview-heading");
      if (heading) { heading.focus(); }
    }
  });
  var region = document.getElementById("list-region");
  if (region) { sync(region); }
})();
