FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mana_llm ./mana_llm
RUN pip install . && useradd --system --uid 10001 --home-dir /app mana
COPY aliases.yaml hypercorn.toml ./
USER mana
ENV PORT=3025 HOST=0.0.0.0
EXPOSE 3025
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"3025\")}/livez', timeout=2)"
# SIGTERM drains in-flight requests and streams (GRACEFUL_TIMEOUT), then exits 0.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "mana_llm", "--config", "hypercorn.toml"]
