FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# Dependencies in a layer of their own: a source change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY README.md LICENSE ./
COPY mana_llm ./mana_llm
RUN pip install --no-deps . && useradd --system --uid 10001 --home-dir /app mana \
 && mkdir /app/data && chown mana /app/data
COPY aliases.yaml hypercorn.toml ./
USER mana
# The usage ledger and the limits' counters: mount a volume here to keep them across restarts.
ENV USAGE_DB=/app/data/mana-llm-usage.sqlite LIMITS_DB=/app/data/mana-llm-limits.sqlite
VOLUME /app/data
# OLLAMA_URL defaults to http://localhost:11434, which inside a container is the container
# itself: point it at the host (`--add-host=host.docker.internal:host-gateway -e
# OLLAMA_URL=http://host.docker.internal:11434`) or at an Ollama container.
ENV PORT=3025 HOST=0.0.0.0
EXPOSE 3025
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"3025\")}/livez', timeout=2)"
# SIGTERM: /readyz turns 503, DRAIN_DELAY, in-flight requests and streams drain
# (GRACEFUL_TIMEOUT), then exit 0. Give `docker stop` a longer timeout than that.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "mana_llm", "--config", "hypercorn.toml"]
