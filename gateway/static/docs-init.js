// Starts Swagger UI on the docs page (/docs). A file of its own, not an inline script, so
// the page's Content-Security-Policy can allow scripts from the gateway ('self') only.
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-document"),
    dom_id: "#swagger-ui",
    validatorUrl: null,
  });
})();
