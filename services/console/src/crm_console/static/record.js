// The record page's tabs (WAI-ARIA tabs): click or arrow keys / Home / End switch panels in
// place; a panel's content is loaded once with htmx from its data-src. Without this script
// every tab is a link (?tab=name) that the server renders into the page.
(function () {
  "use strict";
  var list = document.getElementById("record-tablist");
  if (!list) { return; }
  var tabs = Array.prototype.slice.call(list.querySelectorAll('[role="tab"]'));

  function panelOf(tab) { return document.getElementById(tab.getAttribute("aria-controls")); }

  function load(panel) {
    var src = panel.getAttribute("data-src");
    if (!src || panel.hasAttribute("data-loaded") || !window.htmx) { return; }
    panel.setAttribute("data-loaded", "");
    panel.setAttribute("aria-busy", "true");
    window.htmx.ajax("GET", src, { target: panel, swap: "innerHTML" }).then(function () {
      panel.removeAttribute("aria-busy");
    }, function () {
      panel.removeAttribute("aria-busy");
      panel.removeAttribute("data-loaded");
    });
  }

  function select(tab, focus) {
    tabs.forEach(function (other) {
      var on = other === tab;
      other.setAttribute("aria-selected", on ? "true" : "false");
      other.setAttribute("tabindex", on ? "0" : "-1");
      var panel = panelOf(other);
      if (panel) { panel.hidden = !on; }
    });
    var panel = panelOf(tab);
    if (panel) { load(panel); }
    if (focus) { tab.focus(); }
    var url = new URL(window.location.href);
    url.searchParams.set("tab", tab.getAttribute("data-tab"));
    url.hash = "";
    window.history.replaceState(null, "", url.toString());
  }

  list.addEventListener("click", function (evt) {
    var tab = evt.target.closest('[role="tab"]');
    if (!tab) { return; }
    evt.preventDefault();
    select(tab, true);
  });

  list.addEventListener("keydown", function (evt) {
    var i = tabs.indexOf(document.activeElement);
    if (i < 0) { return; }
    var next = null;
    if (evt.key === "ArrowRight") { next = tabs[(i + 1) % tabs.length]; }
    else if (evt.key === "ArrowLeft") { next = tabs[(i - 1 + tabs.length) % tabs.length]; }
    else if (evt.key === "Home") { next = tabs[0]; }
    else if (evt.key === "End") { next = tabs[tabs.length - 1]; }
    else if (evt.key === " ") { next = tabs[i]; }
    if (next) { evt.preventDefault(); select(next, true); }
  });

  // "Link" and #tab-<name> addresses open that tab (its Add is there).
  function byName(name) {
    for (var i = 0; i < tabs.length; i++) {
      if (tabs[i].getAttribute("data-tab") === name) { return tabs[i]; }
    }
    return null;
  }
  document.addEventListener("click", function (evt) {
    var link = evt.target.closest("[data-tab-link]");
    if (!link) { return; }
    var tab = byName(link.getAttribute("data-tab-link"));
    if (!tab) { return; }
    evt.preventDefault();
    select(tab, false);
    var panel = panelOf(tab);
    if (panel) { panel.focus(); panel.scrollIntoView({ block: "start" }); }
  });
  if (window.location.hash.indexOf("#tab-") === 0) {
    var fromHash = byName(window.location.hash.slice(5));
    if (fromHash) { select(fromHash, false); }
  }
  // Enter in the company search finds companies; it does not submit (Save) the record's form.
  document.addEventListener("keydown", function (evt) {
    if (evt.key === "Enter" && evt.target && evt.target.id === "company_q") { evt.preventDefault(); }
  });
  // The tab the server rendered is selected: load it when the server left it empty.
  tabs.forEach(function (tab) {
    if (tab.getAttribute("aria-selected") === "true") {
      var panel = panelOf(tab);
      if (panel && !panel.hidden) { load(panel); }
    }
  });
})();
