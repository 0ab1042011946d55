// Kept tiny: behaviour that HTML and htmx can't express. No inline scripts (CSP: script-src 'self').
// Most of the inbox's own is in inbox.js and composer.js, loaded after this file on every page.

// Text put where the caret is in a text box (over what is selected), the caret after it.
function zapdeskInsertAtCaret(box, text) {
  var start = box.selectionStart || 0, end = box.selectionEnd || 0;
  box.value = box.value.slice(0, start) + text + box.value.slice(end);
  box.focus();
  box.setSelectionRange(start + text.length, start + text.length);
}

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
  // so what is pushed while it is on its way is laid over it: inbox.js).
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
      zapdeskInsertAtCaret(target, chip.getAttribute("data-insert-variable"));
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
