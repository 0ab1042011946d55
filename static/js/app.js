// Kept tiny: behaviour that HTML and htmx can't express. No inline scripts (CSP: script-src 'self').
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el.matches && el.matches("select[data-autosubmit]") && el.form) {
      el.form.requestSubmit();
    }
  });
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
