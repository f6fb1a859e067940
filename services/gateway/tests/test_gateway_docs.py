"""/docs: Swagger UI from the swagger-ui-bundle package, no CDN."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from crm_gateway.docs import INIT_JS


def test_docs_page_and_every_asset_it_loads(client):
    r = client.get("/docs")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert 'id="swagger-ui"' in html and 'data-spec-url="/openapi.json"' in html
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(refs) == 4
    assert all(ref.startswith("/docs/") for ref in refs), refs  # served here: no CDN
    kinds = {}
    for ref in refs:
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.data) > 100, ref
        kinds[ref.rsplit(".", 1)[-1]] = asset.mimetype
    assert kinds == {"css": "text/css", "png": "image/png", "js": "text/javascript"}
    bundle = client.get("/docs/swagger-ui-bundle.js")
    assert len(bundle.data) > 500_000 and b"SwaggerUIBundle" in bundle.data
    assert "max-age" in bundle.headers["Cache-Control"]


def test_docs_assets_do_not_leave_their_directory(client):
    for path in ("/docs/../../pyproject.toml", "/docs/%2e%2e/%2e%2e/pyproject.toml", "/docs/nope.js"):
        r = client.get(path)
        assert r.status_code == 404, path


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_init_script_relabels_only_the_spec_for_swagger_ui_4():
    harness = """
const vm = require("vm");
let config = null;
const ctx = {
  window: {},
  document: {getElementById: () => ({getAttribute: () => "/openapi.json"})},
  SwaggerUIBundle: Object.assign((c) => { config = c; return {}; }, {presets: {apis: {}}}),
};
vm.runInNewContext(process.argv[1], ctx);
ctx.window.onload();
const doc = JSON.stringify({openapi: "3.1.0", paths: {}});
const spec = config.responseInterceptor({url: "http://gw/openapi.json", text: doc});
const other = config.responseInterceptor({url: "http://gw/v1/leads", text: JSON.stringify({openapi: "3.1.0"})});
const broken = config.responseInterceptor({url: "http://gw/openapi.json", text: "not json"});
console.log(JSON.stringify({url: config.url, spec: JSON.parse(spec.text).openapi, obj: spec.obj.openapi,
  other: JSON.parse(other.text).openapi, broken: broken.text, layout: config.layout}));
"""
    out = subprocess.run(["node", "-e", harness, INIT_JS], capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(out.stdout) == {"url": "/openapi.json", "spec": "3.0.3", "obj": "3.0.3", "other": "3.1.0",
                                      "broken": "not json", "layout": "BaseLayout"}
