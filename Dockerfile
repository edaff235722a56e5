# kvmweb image for docker-compose: web (gunicorn), Celery worker and beat share it.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc pkg-config libvirt-dev libvirt-clients openssh-client \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
ENV DJANGO_SETTINGS_MODULE=kvmweb.settings KVMWEB_DATA_DIR=/data
RUN KVMWEB_SECRET_KEY=build python manage.py collectstatic --noinput -v0
EXPOSE 8000
CMD ["gunicorn", "kvmweb.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3"]
