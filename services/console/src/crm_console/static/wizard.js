// The wizard (New): show only the chosen option of a step (Find existing, Create new, None, copy),
// and let Enter in a search box search. Without this file every option shows and the server
// still does the right thing with plain form posts.
(function () {
  "use strict";
  var sync = function (group) {
    var name = group.getAttribute("data-wizard-modes");
    var checked = group.querySelector('input[type="radio"]:checked');
    var value = checked ? checked.value : "";
    document.querySelectorAll('[data-wizard-option^="' + name + '="]').forEach(function (el) {
      el.hidden = el.getAttribute("data-wizard-option") !== name + "=" + value;
    });
  };
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-wizard-modes]").forEach(function (group) {
      sync(group);
      group.addEventListener("change", function () { sync(group); });
    });
  });
  document.addEventListener("keydown", function (evt) {
    var el = evt.target;
    if (evt.key === "Enter" && el.matches && el.matches("[data-wizard-search]")) {
      var button = el.parentNode.querySelector('button[value="search"]');
      if (button) { evt.preventDefault(); button.click(); }
    }
  });
})();
