"""English and Dutch: from the browser's language, with a switch kept in the session.

The chosen language also goes to the API as ``Accept-Language``, so the catalogue's names
(stages, stage groups, roles, ...) come in it too.
"""

from __future__ import annotations

from flask import Flask, request, session
from flask_babel import Babel

LANGUAGES = {"en": "English", "nl": "Nederlands"}
DEFAULT_LANGUAGE = "en"


def current_language() -> str:
    chosen = session.get("lang")
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(list(LANGUAGES)) or DEFAULT_LANGUAGE


def install(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LANGUAGE)
    Babel(app, locale_selector=current_language)
    app.jinja_env.globals["LANGUAGES"] = LANGUAGES
    app.jinja_env.globals["current_language"] = current_language
