// Maintenance, the stage list: reorder by dragging a row's handle (SortableJS). The page sends the
// ids in their new order with the versions it showed; the server PATCHes each moved stage's index
// (If-Match) and answers with the list as saved and a message. The Move up / Move down buttons
// (the keyboard's way) post through htmx; after the swap the focus returns to the same button.
(function () {
  "use strict";
  var lastMove = null; // {id, direction} of the Move button just used

  function say(doc) {
    var note = doc.querySelector("[data-message]");
    if (note) { window.crmConsole.say(note.innerHTML); note.remove(); }
  }

  function replaceRegion(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    say(doc);
    var fresh = doc.getElementById("stage-region");
    var here = document.getElementById("stage-region");
    if (fresh && here) { here.replaceWith(fresh); if (window.htmx) { window.htmx.process(fresh); } }
    setup();
  }

  function saveOrder(table, tbody) {
    var body = { order: "", group: table.getAttribute("data-group") || "" };
    var ids = [];
    tbody.querySelectorAll("tr[data-id]").forEach(function (row) {
      ids.push(row.getAttribute("data-id"));
      body["version_" + row.getAttribute("data-id")] = row.getAttribute("data-version");
    });
    body.order = ids.join(",");
    window.crmConsole.send("POST", table.getAttribute("data-stage-order"), body)
      .then(function (resp) { return resp.text(); })
      .then(replaceRegion)
      .catch(function () {
        var note = document.createElement("p");
        note.className = "message error";
        note.setAttribute("role", "alert");
        note.textContent = table.getAttribute("data-offline");
        window.crmConsole.say(note.outerHTML);
      });
  }

  function setup() {
    var table = document.querySelector("table[data-stage-order]");
    if (!table || !window.Sortable) { return; }
    var tbody = table.querySelector("tbody[data-sortable]");
    if (!tbody || !tbody.querySelector("tr[data-id]")) { return; }
    window.Sortable.create(tbody, {
      handle: ".drag-handle", animation: 120, draggable: "tr[data-id]",
      onEnd: function (evt) {
        if (evt.oldIndex === evt.newIndex) { return; }
        saveOrder(table, tbody);
      }
    });
  }

  document.addEventListener("click", function (evt) {
    var button = evt.target.closest && evt.target.closest("button[data-move]");
    if (button) { lastMove = { id: button.getAttribute("data-for"), direction: button.getAttribute("data-move") }; }
  });

  document.addEventListener("htmx:afterSettle", function (evt) {
    if (!evt.detail.target || evt.detail.target.id !== "stage-region") { return; }
    setup();
    if (lastMove) {
      var again = document.querySelector('button[data-for="' + lastMove.id + '"][data-move="' + lastMove.direction + '"]');
      if (again) { again.focus(); }
      lastMove = null;
    }
  });

  // Picking a colour means the stage has one.
  document.addEventListener("input", function (evt) {
    if (evt.target && evt.target.id === "color") {
      var none = document.getElementById("no-color");
      if (none) { none.checked = false; }
    }
  });

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", setup); } else { setup(); }
})();
