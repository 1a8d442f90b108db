# Sparrow speech-synthesis server: CPU only, offline once built.
#   docker build -t sparrow-tts .
#   docker run --rm -p 8000:8000 --cpuset-cpus 0,1 sparrow-tts
# One vocoder worker runs per granted core (the server reads its CPU affinity), so pin the
# container with --cpuset-cpus rather than --cpus: a CFS quota lets workers share cores and
# miss real-time deadlines, a cpuset gives each worker a core of its own.
# The base is pinned to Debian 12 "bookworm": Festival, the SLT voice and libsndfile come from its
# archive, and the plain `python:3.11-slim` tag moves to newer Debian releases under us.
FROM python:3.11-slim-bookworm

# Festival + the SLT HTS voice turn text into mel for the text routes; libsndfile backs
# WAV/FLAC encoding. Installed from Debian so nothing is downloaded at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends festival festvox-us-slt-hts libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from pyproject alone, so editing code does not re-download TVM/numpy; every
# version pinned by docker/constraints.txt (scripts/lock-constraints regenerates it).
COPY pyproject.toml README.md ./
COPY docker/constraints.txt /tmp/constraints.txt
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c /tmp/constraints.txt -r /tmp/requirements.txt

COPY models/ models/
COPY server/ server/
RUN pip install --no-deps . && rm -rf build *.egg-info

# The compiled vocoder modules + manifest ship inside the image (the server never compiles).
COPY compiled/ compiled/

# The post-kernel chain's compiled frames (the envelope passes', specialised on a synthesis
# setting, and the pitch postfilter's; not in the voices' modules) for every ISA the voices ship,
# into the server user's cache, where the workers load them. TVM links each library with a C
# compiler, installed for this step and removed after it.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin sparrow \
    && apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && XDG_CACHE_HOME=/home/sparrow/.cache python -m models.kernel.chain_load /app/compiled \
    && apt-get purge -y --auto-remove g++ \
    && rm -rf /var/lib/apt/lists/* \
    && chown -R sparrow:sparrow /app /home/sparrow
USER sparrow

# SPARROW_MODEL: the compiled/ index; its "default" entry is served.
ENV SPARROW_HOST=0.0.0.0 \
    SPARROW_PORT=8000 \
    SPARROW_MODEL=/app/compiled
EXPOSE 8000 10200

# No curl in the slim image: probe with the interpreter that is there anyway.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SPARROW_PORT', '8000'), timeout=2)"]

ENTRYPOINT ["sparrow", "serve"]
