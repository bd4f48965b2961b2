"""``unlearnops dashboard``: a web app and REST API over the ledger, the local runner and the registry.

FastAPI (OpenAPI at ``/api/openapi.json``), pages rendered on the server with Jinja2 and htmx
(vendored under ``static/``; nothing from a CDN). The core package never imports this one.

- :mod:`.store`: the dashboard's own tables (API tokens, comments, runs, callback deliveries,
  schedule) in the ledger's database;
- :mod:`.auth`: roles, hashed API tokens, an optional trusted proxy header, CSRF;
- :mod:`.queue`, :mod:`.timeline`: the queue and a request's merged timeline;
- :mod:`.runs`: runs triggered from the dashboard, executed by a background worker;
- :mod:`.registry`, :mod:`.certs`, :mod:`.schedule`, :mod:`.callbacks`: models, certificates,
  the compliance-batch schedule, signed DSAR callbacks;
- :mod:`.api` and :mod:`.pages`: the JSON API and the HTML pages over the same functions.
"""
