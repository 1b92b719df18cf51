# Image for every app service of docker-compose.yml (migrate, web, worker, beat, flower).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv
# psycopg2-binary and hiredis ship manylinux wheels: no compiler needed.
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY app ./app
RUN pip install '.[ops]' \
    && useradd --system --no-create-home --uid 10001 counters

USER counters
EXPOSE 8000
CMD ["gunicorn", "app:create_app()", "--bind", "0.0.0.0:8000", "--workers", "4"]
