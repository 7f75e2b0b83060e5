# The platform image: Dagster webserver, daemon, code location (gRPC) and every run container
# (DockerRunLauncher starts runs in the code location's image), the MLflow server and the
# model server of deploy/compose.yaml. Built by deploy/docker/build-images.sh from a context
# holding this file, requirements.txt (uv.lock's pins, `uv export`), wheels/ (downloaded on
# the host: the build needs no network) and the project's own wheel.
ARG BASE_IMAGE=ct-platform-base:bookworm
FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CT_HOME=/ct_home \
    CT_SPEC=/app/ct_platform.yaml \
    DAGSTER_HOME=/ct_home/dagster \
    MLFLOW_DISABLE_TELEMETRY=true
WORKDIR /app
# One layer for the dependencies: the vfs storage driver copies the whole tree per layer.
COPY requirements.txt /tmp/app/requirements.txt
COPY wheels/ /tmp/app/wheels/
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
        --find-links /tmp/app/wheels -r /tmp/app/requirements.txt \
    && rm -rf /tmp/app
# The project last: a code change rebuilds this small layer only.
COPY project/ /app/
RUN /opt/venv/bin/pip install --no-index --no-deps --no-cache-dir --disable-pip-version-check \
        /app/dist/*.whl && rm -rf /app/dist && mkdir -p /ct_home /app/data/incoming
