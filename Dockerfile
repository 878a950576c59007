# canvas-stream application image (ingress, worker, sqs, migrate). No secrets are baked in:
# configuration comes from environment variables at run time (see compose.yaml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Build context is filtered by .dockerignore (no .git, .venv, tests, local data or .env files).
COPY . /app
RUN pip install . \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin canvas \
    && mkdir -p /var/lib/canvas-stream/spool && chown -R canvas:canvas /var/lib/canvas-stream

USER canvas:canvas
EXPOSE 8080
CMD ["canvas-stream", "ingress"]
