// Kept tiny: behaviour that HTML and htmx can't express. No inline scripts (CSP: script-src 'self').
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el.matches && el.matches("select[data-autosubmit]") && el.form) {
      el.form.requestSubmit();
    }
    // The inbox's filters: a choice asks for the list at once. The search boxes ask as they are
    // typed in, and not again when left (their own "change").
    if (el.matches && el.matches("form.inbox-filters select") && window.htmx) htmx.trigger(el.form, "refresh");
  });
  // Settings → Numbers: show the Cloud API fields only for Cloud API numbers.
  function syncProviderFields() {
    document.querySelectorAll("select[data-provider-select]").forEach(function (select) {
      var form = select.form;
      if (!form) return;
      form.querySelectorAll("fieldset[data-provider]").forEach(function (fieldset) {
        fieldset.hidden = fieldset.getAttribute("data-provider") !== select.value;
      });
    });
  }
  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("select[data-provider-select]")) syncProviderFields();
  });
  document.addEventListener("DOMContentLoaded", syncProviderFields);

  // QR codes: count down to the next code (the server pushes it over the websocket).
  setInterval(function () {
    document.querySelectorAll(".countdown[data-expires-at]").forEach(function (el) {
      var expires = Date.parse(el.getAttribute("data-expires-at"));
      var target = el.querySelector(".seconds");
      if (!target || isNaN(expires)) return;
      target.textContent = String(Math.max(0, Math.round((expires - Date.now()) / 1000)));
    });
  }, 1000);

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    source.select();
    if (navigator.clipboard) {
      navigator.clipboard.writeText(source.value);
    }
    button.classList.add("copied");
  });
})();

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
    var emoji = button.getAttribute("data-emoji");
    var start = box.selectionStart || 0, end = box.selectionEnd || 0;
    box.value = box.value.slice(0, start) + emoji + box.value.slice(end);
    box.focus();
    box.setSelectionRange(start + emoji.length, start + emoji.length);
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

// Attachments: the number's limit for that kind of file is checked before anything is uploaded
// (the server checks again, by the file's real content); the chosen file is shown and removable.
(function () {
  "use strict";
  function kindOf(file) {
    var type = (file.type || "").split("/")[0];
    return ["image", "video", "audio"].indexOf(type) >= 0 ? type : "document";
  }
  function sizeLabel(bytes) {
    return bytes >= 1048576 ? Math.round(bytes / 1048576) + " MB" : Math.round(bytes / 1024) + " KB";
  }
  function show(form, file, message) {
    var box = form.querySelector("[data-attachment]");
    var error = form.querySelector("[data-attachment-error]");
    var text = form.querySelector("textarea[data-composer]");
    if (error) { error.textContent = message || ""; error.hidden = !message; }
    if (box) {
      box.hidden = !file;
      box.querySelector("[data-attachment-name]").textContent = file ? file.name + " (" + sizeLabel(file.size) + ")" : "";
    }
    if (text) text.required = !file;
  }
  document.addEventListener("change", function (event) {
    var input = event.target;
    if (!input.matches || !input.matches("[data-attachment-input]")) return;
    var file = input.files && input.files[0];
    if (!file) { show(input.form, null, ""); return; }
    var limit = parseInt(input.getAttribute("data-limit-" + kindOf(file)) || "0", 10);
    if (limit && file.size > limit) {
      input.value = "";
      show(input.form, null, (input.getAttribute("data-too-large") || "").replace("{size}", sizeLabel(limit)));
      return;
    }
    show(input.form, file, "");
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-attachment-clear]");
    if (!button) return;
    var input = button.form.querySelector("[data-attachment-input]");
    if (input) input.value = "";
    show(button.form, null, "");
  });
  // A form that answers a mistake with itself (status 413/422/409), or the composer answered with
  // what replaces it (the 24-hour window closed while the tab was open), is swapped like a
  // success; an error page instead (an upload refused before the form was read) only lends its message.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    var form = event.detail.elt && event.detail.elt.closest && event.detail.elt.closest("[data-swap-errors]");
    if (!form || [409, 413, 422].indexOf(status) < 0) return;
    var doc = new DOMParser().parseFromString(event.detail.xhr.responseText || "", "text/html");
    if (doc.querySelector("form[data-swap-errors], [data-replaces-composer]")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
      return;
    }
    var said = doc.querySelector("[data-error-message]");
    var error = form.querySelector("[data-attachment-error]");
    if (said && error) {
      error.textContent = said.textContent;
      error.hidden = false;
      event.detail.isError = false;
    }
  });
})();

// What is typed while a send is on its way stays: the composer that answers the send (a fresh
// one, or the same with a mistake) takes the text the box holds then, with the caret, the focus
// and the saved replies listed. When the send went, the text it sent goes from it: what was typed
// on after it stays (without the blank between), and what is left of it, partly erased, goes too.
// A file chosen meanwhile (not the one that went) stays chosen, and a "Suggest reply" draft being
// written goes on being asked for.
(function () {
  "use strict";
  var sent = new WeakMap(); // a composer's form -> {text, file} it sent
  var kept = null; // what the answer's composer is to take from the one it replaces
  function textOf(elt) {
    return elt && elt.matches && elt.matches("form") ? elt.querySelector("textarea[data-composer]") : null;
  }
  function fileOf(form) {
    var input = form.querySelector("[data-attachment-input]");
    return input && input.files && input.files.length ? input.files : null;
  }
  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.detail.elt, box = textOf(form), files = box && fileOf(form);
    if (box) sent.set(form, { text: box.value, file: files ? files[0] : null });
  });
  document.addEventListener("htmx:beforeSwap", function (event) {
    var form = event.detail.elt;
    var box = textOf(form);
    kept = null;
    if (!box || !sent.has(form)) return;
    var went = sent.get(form);
    var text = null;
    if (box.value !== went.text) {
      var value = box.value, start = box.selectionStart, end = box.selectionEnd;
      if (event.detail.xhr.status < 300 && went.text) {
        var cut = 0;
        if (value.indexOf(went.text) === 0) cut = went.text.length + (/^\s*/.exec(value.slice(went.text.length))[0].length);
        else if (went.text.indexOf(value) === 0) cut = value.length; // erased back to a part of it
        value = value.slice(cut);
        start = Math.max(0, start - cut);
        end = Math.max(0, end - cut);
      }
      var listed = form.querySelector(".canned-suggestions");
      text = { value: value, start: start, end: end, focused: document.activeElement === box,
        listed: listed ? listed.innerHTML : "" };
    }
    var files = fileOf(form);
    if (files && files[0] === went.file) files = null; // the one that went, or was refused with the send
    var draft = form.querySelector(".ai-suggestion .ai-suggestion-state.pending");
    if (text || files || draft) kept = { id: box.id, text: text, files: files, draft: draft ? draft.outerHTML : "" };
  });
  // Once settled (at once: _composer.html), so htmx has readied the form and its "changed" check
  // starts from the empty box.
  document.addEventListener("htmx:afterSettle", function (event) {
    var swapped = event.target; // what came in place of the form
    var box = kept && swapped.querySelector && swapped.querySelector("#" + kept.id);
    if (!box) return;
    var was = kept, form = box.form;
    kept = null;
    if (was.files) {
      var input = form.querySelector("[data-attachment-input]");
      if (input) {
        input.files = was.files;
        input.dispatchEvent(new Event("change", { bubbles: true })); // shown, and its size checked
      }
    }
    var spot = was.draft && form.querySelector(".ai-suggestion");
    if (spot && !spot.children.length) {
      spot.innerHTML = was.draft; // it asks again, and the draft goes into this box
      htmx.process(spot);
    }
    var text = was.text;
    if (!text || box.value === text.value) return;
    box.value = text.value;
    if (text.focused) box.focus();
    box.setSelectionRange(text.start, text.end);
    if (/^\//.test(text.value)) { // a "/shortcut": its saved replies, listed as they were, then asked again
      var listed = form.querySelector(".canned-suggestions");
      if (listed) listed.innerHTML = text.listed;
      box.dispatchEvent(new Event("input", { bubbles: true }));
    }
  });
})();

// Pub/sub is lossy: when the websocket comes back after a drop, or the server says events may
// have been lost while it stayed open (crm/realtime/broker.py, RESYNC), refetch what the page shows.
// Meanwhile the page says it is reconnecting. The server's first frame on a socket says "on"
// once the socket's tab is registered (what is published from then on arrives): that, not the
// handshake, is when the page refetches. Before the server closes a socket for good (no session)
// it says "closed", which only a reload changes; the socket never says "on" again, so the page
// keeps what it shows and offers the reload.
(function () {
  "use strict";
  // The ws extension reconnects after these closes only (a dropped connection, a server restart).
  var RETRIED = [1006, 1011, 1012, 1013];
  var dropped = false; // down since the page was last live: refetch once it is live again
  document.addEventListener("htmx:wsClose", function (event) {
    var state = document.getElementById("live-state");
    if (!state || state.getAttribute("data-state") === "closed") return;
    var code = event.detail && event.detail.event ? event.detail.event.code : 1006;
    var retried = RETRIED.indexOf(code) >= 0;
    state.setAttribute("data-state", retried ? "off" : "closed");
    dropped = dropped || retried;
  });
  function refetch() {
    if (!window.htmx) return;
    refetchList();
    refetchThread();
    document.querySelectorAll(".webqr-panel[id^='webqr-']").forEach(function (panel) {
      htmx.ajax("GET", window.location.pathname, { target: "#" + panel.id, select: "#" + panel.id, swap: "outerHTML" });
    });
  }
  // The list, asked for again with the filters and search as they are now (the form's own request,
  // so what is pushed while it is on its way is laid over it, below).
  function refetchList() {
    var form = document.querySelector("form.inbox-filters"); // the inbox's list comes with it
    if (form && document.getElementById("conversations")) htmx.trigger(form, "refresh");
  }
  // The open thread: its header, newest messages and notes laid over what it shows, so the reply
  // being typed, the older pages scrolled to and the place read stay. When more was missed than
  // its newest page holds, the messages are that page.
  var pushed = {}; // id -> true: pushed live while a thread refetch is on its way (newer than it)
  var fetching = 0;
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    var target = event.detail.target;
    if (!fetching || !target) return;
    if (target.id) pushed[target.id] = true; // a bubble's new status, a note, the header
    if (target.classList && target.classList.contains("messages") && target.lastElementChild) {
      pushed[target.lastElementChild.id] = true; // a new message, at the end
    }
  });
  function refetchThread() {
    var thread = document.querySelector(".thread[data-conversation-id]");
    if (!thread || !window.fetch) return;
    var id = thread.getAttribute("data-conversation-id");
    fetching += 1;
    var headers = { "HX-Request": "true", "X-Zapdesk-Refetch": "1" }; // marks nothing read
    fetch("/conversations/" + id, { headers: headers, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : ""; })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("thread-" + id);
        if (!fresh || !document.getElementById("thread-" + id)) return;
        var header = fresh.querySelector(".thread-header[id]");
        var shownHeader = header && document.getElementById(header.id);
        if (shownHeader && !shownHeader.contains(document.activeElement)) update(shownHeader, header);
        lay(document.getElementById("messages-" + id), fresh.querySelector("#messages-" + id), ".bubble[id]");
        lay(document.getElementById("notes-" + id), fresh.querySelector("#notes-" + id), ".note[id]");
      })
      .catch(function () {}) // offline again: the next reconnect refetches
      .then(function () {
        fetching -= 1;
        if (!fetching) pushed = {};
      });
  }
  function copyOf(node) {
    return document.importNode(node, true);
  }
  // ``shown`` as ``node`` says it now, unless pushed live meanwhile (newer) or unchanged (an audio
  // playing, an image loaded stay as they are).
  function update(shown, node) {
    if (pushed[shown.id] || shown.outerHTML === node.outerHTML) return;
    var copy = copyOf(node);
    shown.replaceWith(copy);
    htmx.process(copy);
  }
  function lay(box, fresh, selector) {
    if (!box || !fresh) return;
    var items = Array.prototype.filter.call(fresh.children, function (item) { return item.matches(selector); });
    if (!items.length) return;
    var shownItems = Array.prototype.filter.call(box.children, function (item) { return item.matches(selector); });
    if (shownItems.length && !document.getElementById(items[0].id) && fresh.querySelector(".older")) {
      box.innerHTML = fresh.innerHTML; // a gap: more missed than the page holds
      box.dataset.stuck = "yes";
      box.scrollTop = box.scrollHeight; // at the newest, before the link to older ones is live
      htmx.process(box);
      return;
    }
    // Gone meanwhile (deleted): shown after the fresh page's oldest, not in it, not pushed since.
    var ids = {};
    items.forEach(function (item) { ids[item.id] = true; });
    var oldest = document.getElementById(items[0].id);
    var after = !oldest && !fresh.querySelector(".older"); // the fresh page holds them all
    shownItems.forEach(function (item) {
      if (item === oldest) after = true;
      if (after && !ids[item.id] && !pushed[item.id]) item.remove();
    });
    // Each one missed goes before the next one shown (a message pushed live while this was on
    // its way may be there already), else at the end.
    items.forEach(function (item, i) {
      var there = document.getElementById(item.id);
      if (there) { update(there, item); return; }
      var next = null;
      for (var j = i + 1; j < items.length && !next; j++) next = document.getElementById(items[j].id);
      var copy = copyOf(item);
      box.insertBefore(copy, next && next.parentNode === box ? next : null);
      htmx.process(copy);
    });
    if (box.dataset.stuck !== "no") box.scrollTop = box.scrollHeight;
  }
  var waiting = null; // a refetch about to go: it covers what is told meanwhile
  function refetchSoon(delay) {
    if (waiting !== null) return;
    waiting = setTimeout(function () {
      waiting = null;
      refetch();
      document.dispatchEvent(new CustomEvent("zapdesk:live"));
    }, delay);
  }
  // The one place that tells the page's scripts the socket is live, and that they should fetch
  // what they show: "zapdesk:live" on document (after a resync, when the page's moment comes).
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    var target = event.detail.target;
    if (!target || target.id !== "live-state") return;
    var state = document.getElementById("live-state");
    if (!state || state.getAttribute("data-state") !== "on") return;
    if (state.hasAttribute("data-resync")) {
      // Told that events may have been lost, the socket open: every open page of a process is
      // told at once (Redis came back), so each picks its moment within the seconds given.
      var within = parseFloat(state.getAttribute("data-resync-within")) || 2;
      refetchSoon(Math.random() * within * 1000);
      return;
    }
    if (dropped) { // back after a drop (the reconnect itself waited a while)
      dropped = false;
      refetch();
    }
    document.dispatchEvent(new CustomEvent("zapdesk:live"));
  });
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

// Leads: ticking rows for the bulk bar (select all, how many are ticked), confirmations before
// destructive plain-form actions, and adding or removing custom field rows in the lead form.
(function () {
  "use strict";
  function boxes(formId) {
    return document.querySelectorAll('input[name="lead_id"][form="' + formId + '"]');
  }
  function countSelected() {
    document.querySelectorAll("form [data-selected-count]").forEach(function (label) {
      var form = label.closest("form");
      var ticked = 0;
      boxes(form.id).forEach(function (box) { if (box.checked) ticked++; });
      label.textContent = (label.getAttribute("data-template") || "{n}").replace("{n}", String(ticked));
      form.classList.toggle("has-selection", ticked > 0);
    });
  }
  document.addEventListener("change", function (event) {
    var el = event.target;
    if (!el.matches) return;
    if (el.matches("input[data-select-all]")) {
      boxes(el.getAttribute("data-select-all")).forEach(function (box) { box.checked = el.checked; });
    }
    if (el.matches("input[data-select-all], input[name='lead_id'][form]")) countSelected();
  });
  document.addEventListener("DOMContentLoaded", countSelected);
  document.addEventListener("htmx:afterSettle", countSelected);
  document.addEventListener("click", function (event) {
    var asking = event.target.closest && event.target.closest("button[data-confirm]");
    if (asking && !window.confirm(asking.getAttribute("data-confirm"))) event.preventDefault();
  });
  document.addEventListener("click", function (event) {
    var add = event.target.closest && event.target.closest("[data-add-field]");
    if (add) {
      var box = add.closest("fieldset");
      var template = box && box.querySelector("template[data-field-row]");
      var rows = box && box.querySelector("[data-field-rows]");
      if (!template || !rows) return;
      rows.appendChild(template.content.cloneNode(true));
      var names = rows.querySelectorAll("input[name='field_name']");
      if (names.length) names[names.length - 1].focus();
      return;
    }
    var remove = event.target.closest && event.target.closest("[data-remove-field]");
    if (remove && remove.closest(".custom-field-row")) remove.closest(".custom-field-row").remove();
  });
})();

// Broadcasts. Compose: message variants added and removed (renumbered, at most data-max),
// variables inserted where the cursor was, and the events the live parts listen to (the audience
// count and the template fields are asked for again only when what they depend on changes).
// Progress page: when the websocket (re)connects, fetch the state it may have missed.
(function () {
  "use strict";
  var lastTarget = null;
  function renumber(box) {
    var rows = box.querySelectorAll("[data-variant-row]");
    rows.forEach(function (row, i) {
      var label = row.querySelector("[data-variant-label]");
      if (label) {
        label.textContent = i === 0 ? box.getAttribute("data-first-label")
          : (box.getAttribute("data-other-label") || "{n}").replace("{n}", String(i + 1));
      }
      var remove = row.querySelector("[data-remove-variant]");
      if (remove) remove.hidden = rows.length === 1;
    });
    var max = parseInt(box.getAttribute("data-max") || "10", 10);
    var add = box.closest("form") && box.closest("form").querySelector("[data-add-variant]");
    if (add) add.disabled = rows.length >= max;
  }
  function changed(form) {
    if (form) form.dispatchEvent(new Event("change", { bubbles: true }));
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-variants]").forEach(renumber);
  });
  document.addEventListener("click", function (event) {
    var add = event.target.closest && event.target.closest("[data-add-variant]");
    if (add) {
      var form = add.closest("form");
      var box = form && form.querySelector("[data-variants]");
      var template = form && form.querySelector("template[data-variant-template]");
      if (!box || !template) return;
      box.appendChild(template.content.cloneNode(true));
      renumber(box);
      var boxes = box.querySelectorAll("textarea");
      if (boxes.length) boxes[boxes.length - 1].focus();
      return;
    }
    var remove = event.target.closest && event.target.closest("[data-remove-variant]");
    if (remove) {
      var variants = remove.closest("[data-variants]");
      var row = remove.closest("[data-variant-row]");
      if (!variants || !row || variants.querySelectorAll("[data-variant-row]").length < 2) return;
      if (lastTarget && row.contains(lastTarget)) lastTarget = null;
      row.remove();
      renumber(variants);
      changed(variants.closest("form"));
      return;
    }
    var chip = event.target.closest && event.target.closest("[data-insert-variable]");
    if (chip) {
      var scope = chip.closest("form");
      var target = lastTarget && document.body.contains(lastTarget) ? lastTarget
        : scope && scope.querySelector("[data-variables-target]");
      if (!target) return;
      var text = chip.getAttribute("data-insert-variable");
      var start = target.selectionStart || 0, end = target.selectionEnd || 0;
      target.value = target.value.slice(0, start) + text + target.value.slice(end);
      target.focus();
      target.setSelectionRange(start + text.length, start + text.length);
      target.dispatchEvent(new Event("input", { bubbles: true }));
    }
  });
  document.addEventListener("focusin", function (event) {
    if (event.target.matches && event.target.matches("[data-variables-target]")) lastTarget = event.target;
  });
  function announce(event) {
    var el = event.target;
    if (!el.matches || !el.form || !el.form.hasAttribute("data-compose")) return;
    if (el.matches("[data-audience]")) el.form.dispatchEvent(new Event("audience-change", { bubbles: true }));
    if (el.matches("[data-numbers]") && event.type === "change") el.form.dispatchEvent(new Event("numbers-change", { bubbles: true }));
  }
  document.addEventListener("input", announce);
  document.addEventListener("change", announce);

  // Each time the socket is live (the server's first frame), the state it may have missed.
  document.addEventListener("zapdesk:live", function () {
    var page = document.querySelector("[data-broadcast-live]");
    if (page && window.htmx) htmx.ajax("GET", page.getAttribute("data-broadcast-live"), { source: page, swap: "none" });
  });
})();

// AI replies: a "Suggest reply" draft goes into the reply box for the agent to edit (it is never
// sent by itself); the knowledge's character count follows the typing; hand-off notices close by
// hand, at most four at once.
(function () {
  "use strict";
  function insertDraft(el) {
    var box = document.querySelector(el.getAttribute("data-target"));
    if (!box || el.hasAttribute("data-inserted")) return;
    el.setAttribute("data-inserted", "");
    var draft = el.getAttribute("data-suggestion-text") || "";
    var typed = box.value.replace(/\s+$/, "");
    box.value = typed ? typed + "\n\n" + draft : draft;
    box.rows = Math.min(8, Math.max(2, box.value.split("\n").length + 1));
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
  }
  document.addEventListener("htmx:load", function (event) {
    var elt = event.detail && event.detail.elt;
    if (!elt || !elt.querySelectorAll) return;
    if (elt.matches("[data-suggestion-text]")) insertDraft(elt);
    elt.querySelectorAll("[data-suggestion-text]").forEach(insertDraft);
  });
  document.addEventListener("input", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches("textarea[data-char-count]")) return;
    var out = document.querySelector(box.getAttribute("data-char-count"));
    if (out) out.textContent = Array.from(box.value.replace(/\r\n/g, "\n")).length.toLocaleString(document.documentElement.lang || undefined);
  });
  document.addEventListener("click", function (event) {
    var close = event.target.closest && event.target.closest("[data-dismiss-notice]");
    var notice = close && close.closest(".notice");
    if (notice) notice.remove();
  });
  document.addEventListener("htmx:oobAfterSwap", function () {
    var notices = document.querySelectorAll("#notices .notice");
    for (var i = 0; i < notices.length - 4; i++) notices[i].remove();
  });
})();

// Live pushes reach every open page of the workspace, and each page shows only part of what they
// update (a thread that isn't open, a list on the lead page). htmx reports an out-of-band fragment
// whose target isn't on the page as a console error, so the "live" extension, beside "ws" on the
// socket's element, leaves such fragments out first: what it drops is what htmx would have dropped.
(function () {
  "use strict";
  if (!window.htmx) return;
  function selector(child) {
    var spec = child.getAttribute("hx-swap-oob") || child.getAttribute("data-hx-swap-oob") || "true";
    var colon = spec.indexOf(":");
    if (colon > 0) return spec.slice(colon + 1); // htmx's own reading: "strategy:selector"
    return child.id ? "#" + CSS.escape(child.id) : null;
  }
  htmx.defineExtension("live", {
    transformResponse: function (text, xhr) {
      if (xhr) return text; // an ordinary response of an element inside: not a live push
      var template = document.createElement("template");
      template.innerHTML = text;
      var coming = {}; // ids the fragments kept so far put on the page, for the ones after them
      Array.from(template.content.children).forEach(function (child) {
        var where = selector(child);
        var there = where && (coming[where] || document.querySelector(where));
        if (!there) {
          child.remove();
          return;
        }
        child.querySelectorAll("[id]").forEach(function (el) { coming["#" + CSS.escape(el.id)] = true; });
      });
      return template.innerHTML;
    }
  });
})();
