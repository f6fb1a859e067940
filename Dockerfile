# One image for every service; CRM_SERVICE picks which one. The same image runs the api
# (`crm-service $CRM_SERVICE api`), the worker and the migrations (`... migrate`).
# Build from the repository root: docker build --build-arg CRM_SERVICE=leads -t crm-leads .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG CRM_SERVICE
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY constraints.txt ./
COPY libs ./libs
COPY services/${CRM_SERVICE} ./services/${CRM_SERVICE}
RUN python -m venv /opt/crm \
 && /opt/crm/bin/pip install -c constraints.txt \
      ./libs/crm-kit ./libs/crm-events ./libs/crm-kafka ./libs/crm-catalogue-view ./libs/crm-pipeline ./services/${CRM_SERVICE}

FROM ${PYTHON_IMAGE}
ARG CRM_SERVICE
ENV PATH=/opt/crm/bin:$PATH PYTHONUNBUFFERED=1 CRM_SERVICE=${CRM_SERVICE} \
    PROMETHEUS_MULTIPROC_DIR=/tmp/metrics CRM_BIND=0.0.0.0:8080
# DejaVu: PDFs of templates with text beyond Latin-1 (e.g. the euro sign).
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/crm /opt/crm
RUN useradd --system --uid 10001 --no-create-home crm
USER 10001
EXPOSE 8080 9090
ENTRYPOINT ["/bin/sh", "-c", "exec crm-service \"$CRM_SERVICE\" \"$@\"", "--"]
CMD ["api"]
