# canvas-stream application image (ingress, worker, sqs, migrate). No secrets are baked in:
# configuration comes from environment variables at run time (see compose.yaml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so this layer is rebuilt only when pyproject.toml or constraints.txt change, not on
# every source edit: [project] dependencies only, pinned by constraints.txt (the file .ci/run uses too).
# No [local] or [test] extra: the embedded broker and PostgreSQL are for `canvas-stream dev` and the tests.
COPY pyproject.toml constraints.txt /app/
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Build context is filtered by .dockerignore (no .git, .venv, tests, local data or .env files).
COPY . /app
RUN pip install --no-deps -c constraints.txt . \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin canvas \
    && mkdir -p /var/lib/canvas-stream/spool && chown -R canvas:canvas /var/lib/canvas-stream

USER canvas:canvas
EXPOSE 8080
CMD ["canvas-stream", "ingress"]
