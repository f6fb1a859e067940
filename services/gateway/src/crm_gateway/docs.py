"""``/docs``: Swagger UI for ``/openapi.json``, served from the ``swagger-ui-bundle`` package.

No CDN: the page and its assets come from the gateway. The bundled Swagger UI (4.15.x)
renders OpenAPI 3.0 only and refuses a document that says ``openapi: 3.1.0``; the page's
script therefore relabels the version of the document it loads for display (the
definitions the kit generates read the same in 3.0), while ``/openapi.json`` itself stays 3.1.

The page has its own Content-Security-Policy (every other answer gets the kit's
``default-src 'none'``): scripts, styles, images and fetches from this origin only, no
inline script, no eval, no framing. Swagger UI's online validator badge (an image from
validator.swagger.io) is switched off.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, Response, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path

ASSETS = Path(str(swagger_ui_path))
ASSET_MAX_AGE = 3600
# Swagger UI's stylesheet carries its icons as data: images; React sets styles through the
# DOM (not style attributes), so no 'unsafe-inline' is needed.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>CRM platform API</title>
  <link rel="stylesheet" href="{css}">
  <link rel="icon" type="image/png" href="{icon}" sizes="32x32">
</head>
<body>
  <div id="swagger-ui" data-spec-url="{spec}"></div>
  <script src="{bundle}" charset="utf-8"></script>
  <script src="{init}" charset="utf-8"></script>
</body>
</html>
"""

INIT_JS = """window.onload = function () {
  var root = document.getElementById("swagger-ui");
  var specUrl = root.getAttribute("data-spec-url");
  window.ui = SwaggerUIBundle({
    url: specUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,  // no badge image from validator.swagger.io: nothing leaves this origin
    persistAuthorization: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // Swagger UI 4 renders OpenAPI 3.0 only: show the 3.1 document under a 3.0 label.
    responseInterceptor: function (res) {
      if (res && typeof res.text === "string" && res.url && res.url.indexOf(specUrl) !== -1) {
        try {
          var doc = JSON.parse(res.text);
          if (typeof doc.openapi === "string" && doc.openapi.indexOf("3.1") === 0) {
            doc.openapi = "3.0.3";
            res.text = JSON.stringify(doc);
            res.data = res.text;
            res.body = doc;
            res.obj = doc;
          }
        } catch (e) { /* not JSON: leave it to Swagger UI */ }
      }
      return res;
    }
  });
};
"""


def install_docs(app: Flask) -> None:
    def docs_page() -> Response:
        html = PAGE.format(
            css=url_for("gateway_docs_asset", filename="swagger-ui.css"),
            icon=url_for("gateway_docs_asset", filename="favicon-32x32.png"),
            bundle=url_for("gateway_docs_asset", filename="swagger-ui-bundle.js"),
            init=url_for("gateway_docs_init"),
            spec=url_for("openapi_json"),
        )
        return Response(html, mimetype="text/html", headers={"Content-Security-Policy": PAGE_CSP})

    def docs_init() -> Response:
        resp = Response(INIT_JS, mimetype="text/javascript")
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    def docs_asset(filename: str) -> Response:
        return send_from_directory(ASSETS, filename, max_age=ASSET_MAX_AGE)

    app.add_url_rule("/docs", "gateway_docs", docs_page, methods=["GET"])
    app.add_url_rule("/docs/gateway-init.js", "gateway_docs_init", docs_init, methods=["GET"])
    app.add_url_rule("/docs/<path:filename>", "gateway_docs_asset", docs_asset, methods=["GET"])
