// The inbox: the conversation selected, the thread, the keyboard (Enter, j/k, saved replies,
// emoji), the live list (static/js/app.js holds the socket's life, composer.js the reply box's
// files and what a send's answer keeps).

// The conversation the list shows selected, and only it: the one last asked for (a click, j or k)
// until its thread is open, then the open one. Shared by the keyboard and the live list below.
var zapdeskSelection = (function () {
  "use strict";
  var wanted = null;
  function current() {
    var open = document.querySelector(".thread[data-conversation-id]");
    var id = open && open.getAttribute("data-conversation-id");
    if (wanted && id === wanted) wanted = null;
    return wanted || id;
  }
  function mark() {
    var showing = current();
    var item = showing && document.getElementById("conversation-" + showing);
    document.querySelectorAll("#conversations .selected").forEach(function (li) {
      if (li !== item) li.classList.remove("selected");
    });
    if (item) item.classList.add("selected");
  }
  return {
    want: function (id) { wanted = id; mark(); },
    // Its thread did not come (the request failed, or Back restored another page meanwhile).
    forget: function (id) { if (!id || wanted === id) { wanted = null; mark(); } },
    mark: mark,
    current: current, // its id: the class may be missing a moment while a live update settles
  };
})();

// The inbox: newest messages at the bottom, Enter sends, j/k move between conversations.
(function () {
  "use strict";
  function scrollThreads() {
    document.querySelectorAll(".messages").forEach(function (box) {
      if (box.dataset.stuck !== "no") box.scrollTop = box.scrollHeight;
    });
  }
  document.addEventListener("DOMContentLoaded", scrollThreads);
  // A photo that finishes loading makes the thread taller: keep the newest message in view.
  document.addEventListener("load", function (event) {
    if (event.target.tagName === "IMG" && event.target.closest && event.target.closest(".messages")) scrollThreads();
  }, true);
  document.addEventListener("htmx:afterSettle", scrollThreads);
  document.addEventListener("htmx:oobAfterSwap", scrollThreads);
  document.addEventListener("scroll", function (event) {
    var box = event.target;
    if (box.classList && box.classList.contains("messages")) {
      box.dataset.stuck = box.scrollHeight - box.scrollTop - box.clientHeight < 40 ? "yes" : "no";
      loadOlder(box);
    }
  }, true);
  // Older messages load as the reader nears the top of the thread, the thread's own scrolling
  // (htmx's "revealed" watches only the window's). The messages read stay where they were.
  var asked = new WeakSet(); // older links whose request is on its way (not an attribute: htmx's history keeps those)
  function loadOlder(box) {
    var older = box.querySelector(":scope > .older");
    if (!older || asked.has(older) || !window.htmx) return;
    if (box.scrollTop < 300 || box.scrollHeight <= box.clientHeight) {
      asked.add(older);
      htmx.trigger(older, "older");
    }
  }
  function olderLink(event) {
    var elt = event.detail.requestConfig ? event.detail.requestConfig.elt : event.detail.elt;
    return elt && elt.classList && elt.classList.contains("older") ? elt : null;
  }
  var kept = null; // the thread whose older messages are coming in, and how far from its bottom it was
  document.addEventListener("htmx:beforeSwap", function (event) {
    var link = olderLink(event);
    var box = link && event.detail.shouldSwap && link.closest(".messages");
    if (box) kept = { box: box, fromBottom: box.scrollHeight - box.scrollTop };
  });
  document.addEventListener("htmx:afterSwap", function () {
    if (!kept) return;
    kept.box.scrollTop = kept.box.scrollHeight - kept.fromBottom;
    kept = null;
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var link = olderLink(event);
    if (!link) return;
    kept = null; // swapped and restored by now, or nothing came
    if (!event.detail.successful) { // asked again at the next scroll, a moment later
      setTimeout(function () { asked.delete(link); }, 2000);
    }
  });
  // Once settled (a thread opened, an older page in, which htmx makes live only now): a thread too
  // short to scroll, or still near its top, asks for the next older page.
  document.addEventListener("htmx:afterSettle", function () {
    document.querySelectorAll(".messages").forEach(loadOlder);
  });
  // Saved replies: "/shortcut" in the composer lists matches; a click (or Enter on the first) inserts it.
  function useCanned(button) {
    var box = document.querySelector(button.getAttribute("data-target"));
    if (!box) return;
    box.value = button.getAttribute("data-canned-text");
    var list = button.closest(".canned-suggestions");
    if (list) list.innerHTML = "";
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-canned-text]");
    if (button) useCanned(button);
  });
  // Emoji: inserted where the cursor is; the picker closes.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-emoji]");
    if (!button) return;
    var box = document.querySelector(button.getAttribute("data-target"));
    if (!box) return;
    zapdeskInsertAtCaret(box, button.getAttribute("data-emoji"));
    var picker = button.closest("details");
    if (picker) picker.open = false;
  });
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (target.matches && target.matches("textarea[data-composer]") && event.key === "Escape") {
      var open = target.form && target.form.querySelector(".canned-suggestions");
      if (open) open.innerHTML = "";
      return;
    }
    if (target.matches && target.matches("textarea[data-composer]") && event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      if (event.repeat) return; // an Enter held down sends once
      var first = target.form && target.form.querySelector(".canned-suggestions [data-canned-text]");
      if (first && /^\/\S*$/.test(target.value)) { useCanned(first); return; }
      var file = target.form && target.form.querySelector("[data-attachment-input]");
      if ((target.value.trim() || (file && file.files.length)) && target.form) target.form.requestSubmit();
      return;
    }
    if (target.closest && target.closest("input, textarea, select, [contenteditable]")) return;
    if (event.key !== "j" && event.key !== "k") return;
    var items = Array.prototype.slice.call(document.querySelectorAll("#conversations [data-nav-item]"));
    if (!items.length) return;
    var selected = zapdeskSelection.current();
    var current = selected && document.querySelector("#conversation-" + selected + " [data-nav-item]");
    var index = items.indexOf(current);
    var next = items[Math.min(items.length - 1, Math.max(0, index + (event.key === "j" ? 1 : -1)))];
    if (next && next !== current) next.click();
  });
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("#conversations [data-nav-item]");
    if (!link) return;
    zapdeskSelection.want(link.parentElement.id.replace("conversation-", ""));
    var inbox = document.querySelector(".inbox");
    if (inbox) inbox.classList.add("has-thread");
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var elt = event.detail.elt; // its item may have been replaced by a live update meanwhile
    var item = elt && elt.matches && elt.matches("[data-nav-item]") && elt.parentElement;
    if (!event.detail.successful && item) zapdeskSelection.forget(item.id.replace("conversation-", ""));
  });
  document.addEventListener("htmx:historyRestore", function () { zapdeskSelection.forget(null); });
})();

// Live items follow the list's filters: a conversation pushed over the websocket that the chosen
// filters would not show (another number, closed, someone else's, without the tag) is hidden.
(function () {
  "use strict";
  function value(form, name) {
    var field = form && form.elements[name];
    return field ? String(field.value || "").trim() : "";
  }
  function shown(item, list, form) {
    if (item.hasAttribute("data-awaiting-search")) return false; // the search asked again decides
    var view = value(form, "view") || "all";
    var status = value(form, "status") || "open";
    var account = value(form, "account");
    var tag = value(form, "tag").toLowerCase().replace(/\s+/g, " ");
    var assignee = item.getAttribute("data-assignee") || "";
    if (item.getAttribute("data-status") && item.getAttribute("data-status") !== status) return false;
    if (account && item.getAttribute("data-account") !== account) return false;
    if (view === "mine" && assignee !== list.getAttribute("data-me")) return false;
    if (view === "unassigned" && assignee !== "") return false;
    if (view === "unread" && item.getAttribute("data-unread") === "0") return false;
    if (tag && (item.getAttribute("data-tags") || "").split("|").indexOf(tag) < 0) return false;
    return true;
  }
  // A list asked for (a filter changed, or the refetch after a reconnect) is the server's picture
  // from when it answered: a conversation pushed live while it was on its way may be missing there
  // (a new message) or older (an update). What was pushed meanwhile is laid over the new list: a
  // new message's conversation at the top (during a search, only if the search found it), an
  // updated one where the new list has it.
  var waiting = 0; // lists asked for and not answered yet
  var shownList = null; // the list the pushes below went into
  var pushed = null; // conversation item id -> {item, top}, since the first of those was asked for
  var order = []; // ids of items pushed to the top, oldest first
  function listRequest(event) {
    var target = event.detail.target;
    return target && target.id === "conversations";
  }
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (!listRequest(event)) return;
    waiting += 1;
    if (!pushed) {
      pushed = {};
      order = [];
      shownList = document.getElementById("conversations");
    }
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (!listRequest(event) || !pushed) return;
    waiting -= 1;
    if (waiting <= 0) {
      waiting = 0;
      pushed = shownList = null;
      order = [];
    }
  });
  // A list item pushed anew, or a new list, shows the open conversation highlighted, and only it. A
  // new list once it has settled: htmx sets its items' own attributes (the class) only then.
  document.addEventListener("htmx:afterSettle", zapdeskSelection.mark);
  document.addEventListener("htmx:afterSwap", function () {
    var list = document.getElementById("conversations");
    if (!pushed || !list || list === shownList) return;
    shownList = list;
    var form = document.querySelector("form.inbox-filters");
    var searching = value(form, "q") !== "";
    function listed(id) {
      var item = document.getElementById(id);
      return item && list.contains(item) ? item : null;
    }
    var laid = [];
    Object.keys(pushed).forEach(function (id) {
      var there = listed(id);
      if (pushed[id].top || !there || there === pushed[id].item) return;
      there.replaceWith(pushed[id].item);
      laid.push(pushed[id].item);
    });
    order.forEach(function (id) {
      var there = listed(id);
      if (searching && !there) return;
      if (there && there !== pushed[id].item) there.remove();
      list.insertBefore(pushed[id].item, list.firstChild);
      laid.push(pushed[id].item);
    });
    laid.forEach(function (item) {
      item.removeAttribute("data-awaiting-search"); // the search found it
      item.hidden = form ? !shown(item, list, form) : false;
    });
    var empty = document.getElementById("conversations-empty");
    if (empty && laid.some(function (item) { return !item.hidden; })) empty.remove();
  });
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    var list = document.getElementById("conversations");
    var form = document.querySelector("form.inbox-filters");
    var target = event.detail.target;
    if (pushed && list && target) {
      if (target === list) { // a new message: its conversation went in at the top
        var first = list.querySelector("li.conversation-item");
        if (first) {
          pushed[first.id] = { item: first, top: true };
          order = order.filter(function (id) { return id !== first.id; }).concat([first.id]);
        }
      } else if (target.classList && target.classList.contains("conversation-item")) {
        var now = document.getElementById(target.id); // replaced where it was, or deleted
        if (now) {
          pushed[target.id] = { item: now, top: Boolean(pushed[target.id] && pushed[target.id].top) };
        } else {
          delete pushed[target.id];
          order = order.filter(function (id) { return id !== target.id; });
        }
      }
    }
    zapdeskSelection.mark();
    if (!list || !form) return;
    if (target === list && value(form, "q") !== "") {
      // During a search the page can't tell whether the conversation that just wrote is found (by
      // its name, its phone or any of its messages): it stays hidden, whatever is pushed next,
      // until the search asked again answers (with what was pushed meanwhile, above).
      var latest = list.querySelector("li.conversation-item");
      if (latest && shown(latest, list, form)) {
        latest.setAttribute("data-awaiting-search", "");
        searchAgain(form);
      }
    }
    list.querySelectorAll("li.conversation-item").forEach(function (item) {
      item.hidden = !shown(item, list, form);
    });
  });
  var again = null;
  function searchAgain(form) {
    clearTimeout(again);
    again = setTimeout(function () {
      again = null;
      if (window.htmx && document.body.contains(form)) htmx.trigger(form, "refresh");
    }, 200);
  }
})();
