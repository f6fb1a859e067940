"""The screens, one module each (CONSOLE.md's screens 1 to 5)."""

from __future__ import annotations

from flask import Flask


def register_views(app: Flask) -> None:
    from crm_console.views import overview, records, wizard

    # The wizard's /<records>/new before the record page's /<records>/<id>.
    for module in (overview, wizard, records):
        app.register_blueprint(module.bp)
    from crm_console.views import activities, files  # screens 4 (contacts, companies, job orders) and 5
    for module in (files, activities):
        app.register_blueprint(module.bp)
    from crm_console.views import record_tabs  # screen 3's tabs (Attachments ... Timeline)
    app.register_blueprint(record_tabs.bp)
    from crm_console.views import listing  # screen 1's list view (bulk actions, preview, print)
    app.register_blueprint(listing.bp)
    from crm_console.views import reports  # screen 7, Reports (stage report, lead funnel, CSV)
    app.register_blueprint(reports.bp)
    from crm_console.views import maintenance  # screen 6, Maintenance: stages and the eight tables
    app.register_blueprint(maintenance.bp)
    from crm_console.views import triggers  # screen 6, Triggers (triggers:admin)
    app.register_blueprint(triggers.bp)
    from crm_console.views import webhooks  # screen 6, Webhooks (webhooks:admin)
    app.register_blueprint(webhooks.bp)
    from crm_console.views import templates_admin  # screen 6, Maintenance > Templates (catalogue:admin)
    app.register_blueprint(templates_admin.bp)
    from crm_console.views import imports  # screen 6/7's Import (a collection's create permission)
    app.register_blueprint(imports.bp)
