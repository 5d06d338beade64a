FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY requirements/runtime.lock requirements/runtime.lock
RUN pip install --no-cache-dir -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY worker worker
COPY connectors connectors
RUN pip install --no-cache-dir --no-deps . && useradd --create-home app
USER app
CMD ["audience-sync", "--help"]
