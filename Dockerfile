# One image per service, from this one file: CRM_SERVICE picks the service. The same image runs its
# api (`crm-service $CRM_SERVICE api`, the default), its worker (`worker`) and its migrations (`migrate`).
# Build from the repository root:
#   docker build --build-arg CRM_SERVICE=leads -t crm-leads .
# CRM_EXTRA_PACKAGES adds optional packages, e.g. boto3 for CRM_ATTACHMENTS_STORE=s3.
# The console (CRM_SERVICE=console) also gets its front-end libraries (htmx, SortableJS) from npm,
# pinned by services/console/assets/package-lock.json, as `make install` does; for every other
# service the asset stages copy nothing.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG NODE_IMAGE=node:20.18.1-bookworm-slim

# Only the console's package.json and lock file, so a change to its code does not re-run `npm ci`.
FROM ${NODE_IMAGE} AS assets-lock
ARG CRM_SERVICE
COPY services/${CRM_SERVICE} /service
RUN mkdir -p /lock \
 && if [ "${CRM_SERVICE}" = console ]; then cp /service/assets/package.json /service/assets/package-lock.json /lock/; fi

# The libraries, laid out as the service's tree (src/crm_console/static/vendor/); empty for the others.
FROM ${NODE_IMAGE} AS assets
ENV NPM_CONFIG_UPDATE_NOTIFIER=false
WORKDIR /assets
COPY --from=assets-lock /lock/ ./
RUN mkdir -p /out \
 && if [ -f package-lock.json ]; then \
      npm ci --ignore-scripts --no-audit --no-fund --loglevel=error \
      && mkdir -p /out/src/crm_console/static/vendor \
      && cp node_modules/htmx.org/dist/htmx.min.js node_modules/sortablejs/Sortable.min.js \
            /out/src/crm_console/static/vendor/; \
    fi

FROM ${PYTHON_IMAGE} AS build
ARG CRM_SERVICE
ARG CRM_EXTRA_PACKAGES=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY constraints.txt ./
COPY libs ./libs
COPY services/${CRM_SERVICE} ./services/${CRM_SERVICE}
COPY --from=assets /out/ ./services/${CRM_SERVICE}/
# The workspace libraries resolve from this tree only (direct references as constraints, never an
# index), and pip installs just those the service depends on; third-party packages are pinned.
RUN test -n "${CRM_SERVICE}" || { echo "build with --build-arg CRM_SERVICE=<service>" >&2; exit 1; } \
 && for lib in libs/*/; do lib="${lib%/}"; echo "${lib#libs/} @ file:///src/${lib}"; done > /tmp/workspace.txt \
 && read -r -a extra <<< "${CRM_EXTRA_PACKAGES}" \
 && python -m venv /opt/crm \
 && /opt/crm/bin/pip install -c constraints.txt -c /tmp/workspace.txt "./services/${CRM_SERVICE}" "${extra[@]}" \
 && /opt/crm/bin/pip uninstall -y pip \
 && /opt/crm/bin/crm-service --help > /dev/null
# A Unicode font for the PDFs of the services that print (crm-pipeline), copied into the final image.
RUN mkdir -p /rootfs \
 && if /opt/crm/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('crm_pipeline') is None)"; then \
      apt-get update \
      && apt-get install -y --no-install-recommends fonts-dejavu-core=2.37-6 \
      && mkdir -p /rootfs/usr/share/fonts/truetype \
      && cp -r /usr/share/fonts/truetype/dejavu /rootfs/usr/share/fonts/truetype/ \
      && rm -rf /var/lib/apt/lists/*; \
    fi

FROM ${PYTHON_IMAGE}
ARG CRM_SERVICE
ENV PATH=/opt/crm/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 CRM_SERVICE=${CRM_SERVICE} \
    CRM_BIND=0.0.0.0:8080 CRM_WORKER_PORT=9090 PROMETHEUS_MULTIPROC_DIR=/run/crm/metrics \
    CRM_ATTACHMENTS_DIR=/var/lib/crm/attachments
# The only writable places; Kubernetes mounts volumes there (the root filesystem is read-only).
RUN groupadd --system --gid 10001 crm \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin crm \
 && install -d -o 10001 -g 10001 /run/crm /run/crm/metrics /var/lib/crm /var/lib/crm/attachments
COPY --from=build /rootfs/ /
COPY --from=build /opt/crm /opt/crm
WORKDIR /var/lib/crm
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["/bin/sh", "-c", "exec crm-service \"$CRM_SERVICE\" \"$@\"", "--"]
CMD ["api"]
