"""The sample service as gunicorn serves it (``gunicorn -c python:crm_kit.web.gunicorn_conf gunicorn_sample:app``),
on the SQLite database named by ``SAMPLE_DB_URL``."""

from __future__ import annotations

import os

from sample_app import make_app

app, _database = make_app(os.environ["SAMPLE_DB_URL"])
