// The board: change a card's stage by dragging it to another column (SortableJS) or from its
// Move to menu button (one shared menu, keyboard as the WAI-ARIA menu button pattern: Enter,
// Space or the arrow keys open it, arrows move, Escape closes). The server saves the move with
// If-Match on the card's version and answers with the message and the tab's new totals (amounts
// are never summed in the page); a refusal puts the card back and says why (412: someone else
// changed the record, with a Reload link).
(function () {
  "use strict";
  var board = document.querySelector(".board[data-movable]");
  if (!board) { return; }
  var records = board.getAttribute("data-records");
  var tab = board.getAttribute("data-tab") || "";
  var form = document.querySelector("form[data-move-form]");
  var menu = document.getElementById("move-menu");
  var opener = null; // the Move to button whose menu is open

  function columnOf(stageId) {
    return board.querySelector('ol[data-stage-id="' + stageId + '"]');
  }

  function applyTotals(doc) {
    doc.querySelectorAll("[data-board-totals] [data-totals]").forEach(function (fresh) {
      var mine = board.querySelector('[data-totals="' + fresh.getAttribute("data-totals") + '"]');
      if (mine) { mine.innerHTML = fresh.innerHTML; }
    });
    var tabs = doc.querySelector("[data-board-totals] [data-tabs]");
    var here = document.querySelector("ul[data-tabs]");
    if (tabs && here) { here.innerHTML = tabs.innerHTML; }
  }

  // POST the move; on success the card keeps the new version, on refusal it goes back.
  function send(card, stageId, undo) {
    var body = { stage_id: stageId, version: card.getAttribute("data-version"), tab: tab };
    return window.crmConsole.send("POST", "/" + records + "/" + card.getAttribute("data-id") + "/stage", body)
      .then(function (resp) {
        return resp.text().then(function (html) { return { ok: resp.ok, html: html }; });
      })
      .then(function (answer) {
        var doc = new DOMParser().parseFromString(answer.html, "text/html");
        var totals = doc.querySelector("[data-board-totals]");
        if (totals) { totals.remove(); }
        window.crmConsole.say(doc.body.innerHTML);
        var done = doc.querySelector("[data-moved]");
        if (answer.ok && done) {
          card.setAttribute("data-version", done.getAttribute("data-version"));
          if (totals) { doc.body.appendChild(totals); applyTotals(doc); }
          return true;
        }
        undo();
        return false;
      })
      .catch(function () {
        undo();
        var note = document.createElement("p");
        note.className = "message error";
        note.setAttribute("role", "alert");
        note.textContent = board.getAttribute("data-offline");
        window.crmConsole.say(note.outerHTML);
        return false;
      });
  }

  // -- drag and drop -------------------------------------------------------------------------------
  if (window.Sortable) {
    board.querySelectorAll("ol[data-stage-id]").forEach(function (list) {
      window.Sortable.create(list, {
        group: "board", animation: 120, filter: "button", preventOnFilter: false,
        onEnd: function (evt) {
          if (evt.from === evt.to) { return; }
          var card = evt.item;
          send(card, evt.to.getAttribute("data-stage-id"), function () {
            evt.from.insertBefore(card, evt.from.children[evt.oldIndex] || null);
          });
        }
      });
    });
  }

  // -- the Move to menu button --------------------------------------------------------------------
  if (!form || !menu) { return; }
  var items = function () {
    return Array.prototype.slice.call(menu.querySelectorAll('[role="menuitem"]')).filter(function (b) {
      return !b.disabled;
    });
  };

  function close(focusOpener) {
    if (!opener) { return; }
    menu.hidden = true;
    opener.setAttribute("aria-expanded", "false");
    if (focusOpener) { opener.focus(); }
    opener = null;
  }

  function open(button, which) {
    if (opener === button) { return; }
    close(false);
    var card = button.closest(".board-card");
    var here = card.closest("ol[data-stage-id]").getAttribute("data-stage-id");
    if (!button.id) { button.id = "move-" + card.getAttribute("data-id"); }
    opener = button;
    menu.setAttribute("aria-labelledby", button.id);
    menu.querySelectorAll('[role="menuitem"]').forEach(function (b) { b.disabled = b.value === here; });
    form.setAttribute("action", "/" + records + "/" + card.getAttribute("data-id") + "/stage");
    form.querySelector('input[name="version"]').value = card.getAttribute("data-version");
    card.appendChild(form);
    menu.hidden = false;
    button.setAttribute("aria-expanded", "true");
    var list = items();
    if (list.length) { (which === "last" ? list[list.length - 1] : list[0]).focus(); }
  }

  board.addEventListener("click", function (evt) {
    var button = evt.target.closest(".move-button");
    if (!button) { return; }
    if (opener === button) { close(true); } else { open(button, "first"); }
  });

  board.addEventListener("keydown", function (evt) {
    var button = evt.target.closest && evt.target.closest(".move-button");
    if (button && (evt.key === "ArrowDown" || evt.key === "ArrowUp")) {
      evt.preventDefault();
      open(button, evt.key === "ArrowUp" ? "last" : "first");
      return;
    }
    if (!opener || !menu.contains(evt.target)) { return; }
    var list = items();
    var at = list.indexOf(evt.target);
    var next = null;
    if (evt.key === "ArrowDown") { next = list[(at + 1) % list.length]; }
    else if (evt.key === "ArrowUp") { next = list[(at - 1 + list.length) % list.length]; }
    else if (evt.key === "Home") { next = list[0]; }
    else if (evt.key === "End") { next = list[list.length - 1]; }
    else if (evt.key === "Escape") { evt.preventDefault(); close(true); return; }
    else if (evt.key === "Tab") { close(false); return; }
    if (next) { evt.preventDefault(); next.focus(); }
  });

  document.addEventListener("click", function (evt) {
    if (opener && !menu.contains(evt.target) && !opener.contains(evt.target)) { close(false); }
  });

  form.addEventListener("submit", function (evt) {
    evt.preventDefault();
    var choice = evt.submitter;
    if (!opener || !choice) { return; }
    var button = opener;
    var card = button.closest(".board-card");
    var from = card.parentNode;
    var before = card.nextSibling;
    var target = columnOf(choice.value);
    close(false);
    board.parentNode.appendChild(form); // the menu leaves the card before the card moves
    if (target) { target.insertBefore(card, target.firstChild); }
    else { card.hidden = true; } // a stage of another tab: the card leaves this board
    button.focus();
    send(card, choice.value, function () {
      card.hidden = false;
      from.insertBefore(card, before);
      button.focus();
    }).then(function (ok) {
      if (ok && !target) { card.remove(); }
    });
  });
})();
