# One image for every Laku process: `laku serve SERVICE` (a service or a provider sandbox),
# `laku migrate`, or `laku up` (the whole platform with an embedded PostgreSQL, for trying it).
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/laku
WORKDIR /src
# Dependencies first, from the project's metadata alone: a code change keeps this layer.
COPY pyproject.toml README.md ./
RUN mkdir -p src/laku && touch src/laku/__init__.py \
    && /opt/laku/bin/pip install . \
    && /opt/laku/bin/pip uninstall --yes laku
COPY src ./src
RUN /opt/laku/bin/pip install --no-deps . \
    && /opt/laku/bin/python -m compileall -q /opt/laku/lib

FROM python:${PYTHON_VERSION}-slim
ENV PATH=/opt/laku/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LAKU_HOST=0.0.0.0 \
    LAKU_LOG_JSON=true \
    LAKU_DATA_DIR=/var/lib/laku
RUN groupadd --system --gid 10001 laku \
    && useradd --system --uid 10001 --gid laku --home-dir /var/lib/laku --create-home laku
COPY --from=build /opt/laku /opt/laku
USER 10001:10001
WORKDIR /var/lib/laku
# The web 3000, services 3001-3015, sandboxes 4010-4014, the SMTP sandbox's sink 2525.
EXPOSE 3000 3001 3002 3003 3004 3005 3006 3007 3008 3010 3011 3013 3015 4010 4011 4012 4013 4014 2525
# The service named by LAKU_SERVICE (Compose and the manifests set it), else every process.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["laku", "healthcheck"]
# uvicorn handles SIGTERM itself: no shell in between to swallow it.
ENTRYPOINT ["laku"]
CMD ["up", "--no-demo"]
