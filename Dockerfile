# syntax=docker/dockerfile:1
# One image for every Parley service in compose.yaml (Rasa replicas, the action server,
# the desk, the migration job): the framework installed with the pinned constraints,
# the reference project, and its model trained at build time, so every Rasa replica
# serves the very same model. Build: `docker compose build` (or `docker build -t parley .`).

FROM python:3.10-slim AS build
# Compilers only here, for any dependency without a wheel; the final image has none.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The framework first: this layer is rebuilt only when it or the pins change.
COPY pyproject.toml constraints.txt README.md ./
COPY bot/ bot/
COPY connectors/ connectors/
RUN pip install --upgrade pip \
    && pip install -c constraints.txt .

FROM python:3.10-slim
RUN useradd --create-home --uid 10001 parley \
    && install -d -o parley -g parley /app
COPY --from=build /opt/venv /opt/venv
# PARLEY_PROJECT: every `parley` command and service reads /app/parley.yml.
# PARLEY_HOST: listen on the container's interfaces, not only its loopback.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PARLEY_PROJECT=/app \
    PARLEY_HOST=0.0.0.0 \
    RASA_TELEMETRY_ENABLED=false
WORKDIR /app
USER parley
# The reference project (a Rasa project like yours): replace with your own.
COPY --chown=parley:parley parley.yml config.yml domain.yml credentials.yml endpoints.yml ./
COPY --chown=parley:parley data/ data/
COPY --chown=parley:parley actions/ actions/
COPY --chown=parley:parley deploy/ deploy/
RUN parley train
EXPOSE 5005 5055 5006
# compose.yaml gives each service its own command (rasa run, action server, desk).
CMD ["parley", "--help"]
