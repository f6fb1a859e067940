"""The topic registry's ``readers`` (which the gateway's consistency tokens rely on) agree with
the consumers each service actually runs: a service that keeps a read model of a topic must be
waited for, and one that does not must not be."""

from __future__ import annotations

import pytest

from crm_events.topics import all_topics, sources_of
from crm_kit.service import find_service
from crm_kit.settings import SERVICES, load_settings


@pytest.mark.parametrize("name", SERVICES)
def test_registry_readers_match_the_worker_plans(name, tmp_path):
    settings = load_settings("domain", {
        "CRM_SERVICE_NAME": name, "CRM_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": "x" * 40, "CRM_LOG_FORMAT": "text",
        "CRM_WEBHOOK_SECRETS_KEY": "only-to-build-the-app", "CRM_ATTACHMENTS_DIR": str(tmp_path / "files")})
    app = find_service(name).build_app(settings)
    consumed = set(app.extensions["crm_read_models"].readers)
    declared = {topic.name for topic in all_topics(include_dlq=False) if name in topic.readers}
    assert consumed == declared
    # What the gateway waits for before forwarding to this service: other owners' event topics only.
    expected = {t.owner for t in all_topics(include_dlq=False)
                if t.name in consumed and not t.asynchronous and t.owner != name}
    assert set(sources_of(name)) == expected
