# syntax=docker/dockerfile:1
# Backprop's image, in two targets that differ only in JAX's build:
#   docker build --target cpu -t backprop:cpu .   (the default: JAX on the CPU)
#   docker build --target gpu -t backprop:gpu .   (JAX's CUDA 12 build; needs the host's
#                                                  NVIDIA driver and container toolkit)
# Both install what `make run` installs (pyproject.toml at the versions pinned in
# requirements/lock.txt), run as an unprivileged user, keep their data in /data (a volume),
# and default to the REST API on port 8000. No secret is baked in: every setting comes
# from BACKPROP_* variables at run time (docker-compose.yml, docs/deploy.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# Dependency layers: built from pyproject.toml and the lock alone, so a change to the
# source reuses them, and the GPU layer adds to the CPU one instead of repeating it.
FROM base AS deps-cpu
WORKDIR /build
RUN python -m venv /opt/venv
COPY pyproject.toml ./
COPY requirements/ requirements/
RUN python requirements/pyproject_requirements.py > service.txt \
    && pip install --no-cache-dir -c requirements/lock.txt -r service.txt

FROM deps-cpu AS deps-gpu
RUN python requirements/pyproject_requirements.py gpu > service-gpu.txt \
    && pip install --no-cache-dir -c requirements/lock.txt -r service-gpu.txt

# What both targets share: the account, the data directory, the probe and the command.
FROM base AS runtime
RUN groupadd --system --gid 10001 backprop \
    && useradd --system --uid 10001 --gid backprop --create-home \
        --home-dir /home/backprop --shell /usr/sbin/nologin backprop \
    && mkdir /data \
    && chown backprop:backprop /data
ENV BACKPROP_DATA_DIR=/data
WORKDIR /app
EXPOSE 8000
# The API's liveness (worker containers override it in docker-compose.yml). Python, since
# the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["backprop", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM runtime AS gpu
# JAX's CUDA wheels carry the CUDA libraries; the container toolkit adds the driver.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=deps-gpu /opt/venv /opt/venv
COPY . /app
# Editable, as `make run` installs it: migrations are found beside the source.
RUN pip install --no-cache-dir --no-deps -e /app
USER 10001:10001

# Last, so that a plain `docker build .` builds the CPU image.
FROM runtime AS cpu
COPY --from=deps-cpu /opt/venv /opt/venv
COPY . /app
RUN pip install --no-cache-dir --no-deps -e /app
USER 10001:10001
