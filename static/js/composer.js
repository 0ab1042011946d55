// The reply box: attachments checked before they go, forms that answer a mistake with themselves
// (the leads page's too), and what the agent does while a send is on its way.

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
  // Registered before the carry below, which reads the shouldSwap decided here.
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
// A file chosen meanwhile (not the one that went) stays chosen, and a "Suggest reply" asked for
// (its answer on its way, or the draft being written) lands in the composer that answers the send.
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
    if (!box || !sent.has(form) || !event.detail.shouldSwap) return;
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
    // A "Suggest reply" still on its way answers into the composer that replaces this one (htmx
    // asks the answer's target, this composer's, before it swaps).
    var old = form.querySelector(".suggest-button.htmx-request") && form.querySelector(".ai-suggestion");
    if (old) {
      old.addEventListener("htmx:beforeSwap", function retarget(answer) {
        if (answer.detail.target !== old) return;
        old.removeEventListener("htmx:beforeSwap", retarget);
        var spot = document.getElementById(old.id);
        if (spot && !spot.children.length) answer.detail.target = spot; // not over one asked for since
      });
    }
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
