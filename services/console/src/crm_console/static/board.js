// The board: drag a card to another column to change its stage (SortableJS). The server saves
// it with If-Match on the card's version; a refusal puts the card back and says why (a 412:
// someone else changed the record, with a link to reload). The Move to menu on every card does
// the same from the keyboard, without this script.
(function () {
  "use strict";
  var board = document.querySelector(".board[data-movable]");
  if (!board || !window.Sortable) { return; }
  var records = board.getAttribute("data-records");

  function refreshTotals() {
    // The column headers' totals come from the server (amounts are never summed in the page).
    fetch(window.location.href, { credentials: "same-origin" }).then(function (resp) {
      return resp.ok ? resp.text() : null;
    }).then(function (html) {
      if (!html) { return; }
      var fresh = new DOMParser().parseFromString(html, "text/html");
      fresh.querySelectorAll("section.column").forEach(function (col) {
        var id = col.getAttribute("data-stage-id");
        var mine = board.querySelector('section.column[data-stage-id="' + id + '"] [data-totals]');
        var theirs = col.querySelector("[data-totals]");
        if (mine && theirs) { mine.innerHTML = theirs.innerHTML; }
      });
      var tabs = fresh.querySelector("ul.tabs");
      var here = document.querySelector("ul.tabs");
      if (tabs && here) { here.innerHTML = tabs.innerHTML; }
    });
  }

  function moved(evt) {
    if (evt.from === evt.to) { return; }
    var card = evt.item;
    var body = { stage_id: evt.to.getAttribute("data-stage-id"), version: card.getAttribute("data-version") };
    window.crmConsole.send("POST", "/" + records + "/" + card.getAttribute("data-id") + "/stage", body)
      .then(function (resp) {
        return resp.text().then(function (html) { return { ok: resp.ok, html: html }; });
      })
      .then(function (answer) {
        window.crmConsole.say(answer.html);
        if (answer.ok) {
          var note = document.querySelector("#messages [data-version]");
          if (note) {
            card.setAttribute("data-version", note.getAttribute("data-version"));
            card.querySelectorAll('input[name="version"]').forEach(function (input) {
              input.value = note.getAttribute("data-version");
            });
          }
          refreshTotals();
        } else {
          evt.from.insertBefore(card, evt.from.children[evt.oldIndex] || null);
        }
      })
      .catch(function () {
        evt.from.insertBefore(card, evt.from.children[evt.oldIndex] || null);
      });
  }

  board.querySelectorAll("ol[data-stage-id]").forEach(function (list) {
    window.Sortable.create(list, { group: "board", animation: 120, onEnd: moved, filter: "details, summary, button",
                                   preventOnFilter: false });
  });
})();
