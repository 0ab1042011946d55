// Kept tiny: behaviour that HTML and htmx can't express. No inline scripts (CSP: script-src 'self').
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el.matches && el.matches("select[data-autosubmit]") && el.form) {
      el.form.requestSubmit();
    }
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
