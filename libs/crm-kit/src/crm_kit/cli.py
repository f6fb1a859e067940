"""``crm-service <name> api|worker|migrate``: the one command that runs any service.

The same image runs all three (Kubernetes: web Deployment, worker Deployment, migration
Job); locally ``make run`` starts them through this command too.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from crm_kit.logs import configure_logging
from crm_kit.service import ServiceSpec, find_service, installed_services
from crm_kit.settings import ConfigError, Settings, load_settings

log = logging.getLogger("crm_kit.cli")


def _settings_for(spec: ServiceSpec) -> Settings:
    os.environ["CRM_SERVICE_NAME"] = spec.name
    settings = load_settings(spec.role)
    configure_logging(spec.name, settings["CRM_LOG_LEVEL"], settings["CRM_LOG_FORMAT"])
    return settings


def wsgi() -> object:
    """gunicorn's app factory: ``crm_kit.cli:wsgi()`` builds the app named by CRM_SERVICE_NAME."""
    spec = find_service(os.environ["CRM_SERVICE_NAME"])
    return spec.build_app(_settings_for(spec))


def migrate(spec: ServiceSpec, settings: Settings) -> int:
    if spec.migrations is None:
        log.info("service %s has no database; nothing to migrate", spec.name)
        return 0
    from crm_kit.migrations import upgrade

    upgrade(settings.database_url, spec.migrations, spec.metadata)
    log.info("migrations of %s are at head", spec.name)
    if spec.after_migrate is not None:
        spec.after_migrate(settings)
    return 0


GUNICORN_ARGS = ["-c", "python:crm_kit.web.gunicorn_conf", "crm_kit.cli:wsgi()"]


def main(argv: list[str] | None = None, *, in_process: bool = False) -> int:
    """Run one command. ``in_process``: an api's gunicorn runs in this process instead of replacing
    it (a process forked from a fork server that imported the libraries: it keeps sharing them)."""
    parser = argparse.ArgumentParser(prog="crm-service", description=__doc__)
    parser.add_argument("service", help=f"one of: {', '.join(installed_services()) or '(none installed)'}")
    parser.add_argument("command", choices=["api", "worker", "migrate"])
    parser.add_argument("--bind", default=None, help="api: host:port (default CRM_BIND or 127.0.0.1:8000)")
    parser.add_argument("--workers", type=int, default=None, help="api: gunicorn worker processes")
    args = parser.parse_args(argv)
    if args.command == "worker":
        from crm_kit.metrics import fresh_multiprocess_directory

        fresh_multiprocess_directory()  # before the service's modules are imported
    elif os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # The api's master (gunicorn) empties it at start; it must exist before any import.
        os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    try:
        spec = find_service(args.service)
        settings = _settings_for(spec)
    except (LookupError, ConfigError) as exc:
        print(f"crm-service: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        return migrate(spec, settings)
    if args.command == "worker":
        if spec.run_worker is None:
            print(f"crm-service: {spec.name} has no worker", file=sys.stderr)
            return 2
        return spec.run_worker(settings)
    # api: hand over to gunicorn in this process (signals then reach its master directly).
    if args.bind:
        os.environ["CRM_BIND"] = args.bind
    if args.workers:
        os.environ["CRM_WEB_CONCURRENCY"] = str(args.workers)
    if in_process:
        # No build first: it would stay in the master as a second copy of the app. A configuration
        # error then stops the worker's boot, and gunicorn's master exits with its traceback logged.
        from gunicorn.app.wsgiapp import run

        sys.argv = ["gunicorn", *GUNICORN_ARGS]
        run(prog="gunicorn")  # exits (SystemExit) when the master stops
        return 0  # pragma: no cover - gunicorn's master ends with sys.exit
    # Build once here so configuration errors fail before gunicorn forks workers.
    spec.build_app(settings)
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", *GUNICORN_ARGS])  # noqa: S606 - replaces this process, no shell
    return 0  # pragma: no cover - exec does not return


if __name__ == "__main__":
    sys.exit(main())
