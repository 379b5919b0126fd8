"""The OpenAPI 3.1 document, generated from the routes' declarations and the msgspec structs
that validate the bodies — one source for the code and its contract."""

from __future__ import annotations

from typing import Any

import msgspec

from admin_api import schemas

ERRORS = {
    400: "The query or body is malformed",
    401: "No valid API token",
    403: "The token's role may not do this",
    404: "No such resource",
    408: "The body took too long to arrive",
    409: "Conflicts with the current state",
    413: "The body is too large",
    415: "The body is not JSON (an upload: not of an allowed type)",
    422: "The body is valid JSON but not a valid resource",
    429: "Too many wrong tokens from this address: wait Retry-After seconds",
    503: "Did not finish in time; the request may still take effect",
}


def document(routes: list[Any]) -> dict[str, Any]:
    types: list[Any] = [schemas.Problem]
    for route in routes:
        for t in (route.body, route.response):
            if t is not None:
                types.append(t)
    refs, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    schema_of = {id(t): ref for t, ref in zip(types, refs, strict=True)}
    problem = {"application/problem+json": {"schema": schema_of[id(schemas.Problem)]}}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": f"{route.method.lower()}_{_slug(route.path)}",
            "summary": route.summary,
            "tags": [route.tag],
        }
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "maxLength": 64},
            }
            for name in ("id", "key")
            if "{" + name + "}" in route.path
        ]
        parameters += [
            {"name": name, "in": "query", "required": False, "schema": schema, "description": text}
            for name, schema, text in route.query
        ]
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[id(route.body)]}},
            }
        responses: dict[str, Any] = {}
        if route.response is not None:
            responses[str(route.status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": schema_of[id(route.response)]}},
            }
        else:
            responses[str(route.status)] = {"description": "Done"}
        codes = [400]
        if route.method != "GET" or "{" in route.path:
            codes.append(404)
        if route.method != "GET":
            codes.append(409)
        if route.body is not None:
            codes += [413, 415, 422]
        if route.roles:
            codes += [401, 403, 429]
            operation["security"] = [{"bearer": []}]
            operation["description"] = "Roles: " + ", ".join(sorted(r.value for r in route.roles))
        codes += route.errors
        for code in sorted(codes):
            responses[str(code)] = {"description": ERRORS[code], "content": problem}
        if 429 in codes:
            responses["429"]["headers"] = {
                "Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}
            }
        operation["responses"] = responses
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    # Secrets are never shown (a token only once, in the answer to its creation).
    for name, secret in (
        ("Service", "identity_secret"),
        ("ServiceInput", "identity_secret"),
        ("WebhookInput", "secret"),
    ):
        properties = components.get(name, {}).get("properties", {})
        if secret in properties:
            properties[secret]["writeOnly"] = True
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Omni admin API",
            "version": "1",
            "description": (
                "Configure services, groups, schedules, operators and parameters live; list and "
                "resume conversations; queue snapshots and reports; the audit log. Every change "
                "applies at once, without a restart. Errors are RFC 9457 problem details."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token, or a session token (POST /api/v1/session)",
                }
            },
        },
    }


def _slug(path: str) -> str:
    return (
        path.removeprefix("/api/v1/")
        .replace("/", "_")
        .replace("{", "")
        .replace("}", "")
        .replace("-", "_")
        or "root"
    )


#: A self-contained page (no CDN: nothing is fetched but /openapi.json) listing the API.
DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Omni admin API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
h1{margin-bottom:0}.op{border:1px solid #ddd;border-radius:6px;margin:.6rem 0;padding:.4rem .8rem}
.m{display:inline-block;min-width:4.5rem;font-weight:600}.GET{color:#0a7}.POST{color:#06c}
.PUT{color:#a60}.DELETE{color:#c22}code{background:#f4f4f4;padding:0 .3rem;border-radius:3px}
details pre{background:#f8f8f8;padding:.6rem;overflow:auto;font-size:13px}
</style></head><body>
<h1>Omni admin API</h1><p id="intro">Loading <a href="/openapi.json">/openapi.json</a>…</p>
<div id="ops"></div>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  document.getElementById('intro').textContent = doc.info.description +
    ' Authenticate with "Authorization: Bearer <token>".';
  const ops = document.getElementById('ops');
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const div = document.createElement('div'); div.className = 'op';
      const m = method.toUpperCase();
      div.innerHTML = `<span class="m ${m}">${m}</span><code></code> — <span></span>`;
      div.querySelector('code').textContent = path;
      const roles = op.description ? ' (' + op.description + ')' : '';
      div.querySelector('span:last-child').textContent = op.summary + roles;
      const details = document.createElement('details');
      details.innerHTML = '<summary>details</summary><pre></pre>';
      details.querySelector('pre').textContent = JSON.stringify(op, null, 2);
      div.appendChild(details); ops.appendChild(div);
    }
  }
});
</script></body></html>
"""
