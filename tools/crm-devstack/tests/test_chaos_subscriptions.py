"""`make chaos` waits for and checks every consumer group the services run: it takes the groups
from the services' worker plans, so a consumer added to a service is watched without an edit here."""

from __future__ import annotations

import pytest

from crm_devstack.chaos.observe import consumer_groups, event_types
from crm_devstack.stack import SERVICES
from crm_devstack.topics_table import plan_settings
from crm_events.topics import all_topics


@pytest.mark.parametrize("service", SERVICES)
def test_the_chaos_run_watches_the_groups_of_each_worker_plan(service, tmp_path):
    settings = plan_settings(service, tmp_path)
    groups = consumer_groups(service, settings)
    assert groups, f"{service} runs no consumer"
    # Group ids as the consumers store their offsets and inbox rows under them.
    assert all(name.startswith(f"{service}.") for name in groups)
    read = {topic for topics in groups.values() for topic in topics}
    assert read == {topic.name for topic in all_topics(include_dlq=False) if service in topic.readers}


@pytest.mark.parametrize("service", SERVICES)
def test_the_chaos_run_expects_inbox_rows_only_for_the_types_a_consumer_acts_on(service, tmp_path):
    settings = plan_settings(service, tmp_path)
    handled = event_types(service, settings)
    assert set(handled) == set(consumer_groups(service, settings))
    if service == "opportunities":  # it reads every lead event for one type
        assert handled["opportunities.conversions"] == {"lead.converted"}
    if service == "triggers":  # a record view: every record event
        assert handled["triggers.evaluate"] is None
