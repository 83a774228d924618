# fewstep images. Build a target by name (the compose file does):
#   docker build --target cpu -t fewstep:0.1.0-cpu .     ONNX Runtime on CPU, no torch (default service)
#   docker build --target gpu -t fewstep:0.1.0-gpu .     CUDA base, onnxruntime-gpu + TensorRT; builds the
#                                                        TensorRT engines on first start, then serves
# Stages run in file order with the classic builder (DOCKER_BUILDKIT=0 builds every stage before the
# target), so the GPU stage comes last and a CPU build never touches the CUDA base.
# Every Python package comes from the locks `make` installs (requirements/serve.lock for the service,
# requirements/export.lock for the bundles stage): pinned, hashed (pip --require-hashes) and complete
# (--no-deps: the lock is the whole list).
#
# Build arguments:
#   BASE_IMAGE       the Python 3.11 base of the CPU stages (pinned; an offline build passes a local
#                    image, see deploy/docker/build-base.sh)
#   GPU_BASE_IMAGE   the CUDA runtime base of the GPU stage (pinned)
#   PIP_OPTIONS      extra pip options; offline: "--no-index" (then every wheel comes from
#                    deploy/docker/wheelhouse/, filled on the host by `make wheelhouse`)
#   BUNDLES_SOURCE   export:  a build stage installs torch (CPU build) and the exporter, pinned and
#                             hashed by requirements/export.lock (what `make bundles` installs), and
#                             exports the committed weights (models/) into bundles (needs PyPI and
#                             TORCH_INDEX, or, with PIP_OPTIONS=--no-index, the wheels of
#                             `make wheelhouse-export`)
#                    context: copy bundles made on the host by `make docker-bundles` (no torch in the
#                             build at all; what CI and air-gapped builds use)
#   STUDENTS         the student bundles served beside the teacher (default "mm-alt-k8 pd-k4"; the
#                    default model, FEWSTEP_DEFAULT_MODEL, is the Makefile's DEFAULT_MODEL)
ARG BASE_IMAGE=python:3.11.14-slim-bookworm
ARG GPU_BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------
# builder: the service's virtual environment (the base install: no torch), the serving lock.
FROM ${BASE_IMAGE} AS builder
ARG PIP_OPTIONS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY deploy/docker/wheelhouse/ /wheelhouse/
COPY requirements/serve.lock /tmp/serve.lock
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install ${PIP_OPTIONS} --require-hashes --no-deps --find-links /wheelhouse -r /tmp/serve.lock
COPY pyproject.toml README.md /src/
COPY fewstep/ /src/fewstep/
COPY fewstep_cli/ /src/fewstep_cli/
COPY shapesworld/ /src/shapesworld/
COPY service/ /src/service/
COPY distill/ /src/distill/
COPY bench/ /src/bench/
# setuptools comes from the lock: no build isolation, so the offline build needs nothing else.
# OpenVINO (the bf16 CPU backend) ships plugins and frontends the CPU image never loads: its GPU and
# NPU plugins, their kernel cache, and every frontend but ONNX (about 80 of its 180 MB). OpenVINO
# finds plugins and frontends by file at run time, so what is removed is simply never offered.
RUN /opt/venv/bin/pip install ${PIP_OPTIONS} --no-deps --no-build-isolation /src \
 && /opt/venv/bin/pip uninstall -y -q setuptools \
 && ov=$(/opt/venv/bin/python -c "import os, importlib.util as u; print(os.path.dirname(u.find_spec('openvino').origin))") \
 && rm -rf "$ov/include" "$ov"/libs/libopenvino_intel_gpu_plugin.so "$ov"/libs/libopenvino_intel_npu_plugin.so \
      "$ov"/libs/cache.json \
 && for d in "$ov"/frontend/*/; do case "$d" in */onnx/) ;; *) rm -rf "$d" ;; esac; done \
 && for f in "$ov"/libs/libopenvino_*_frontend.so*; do case "$f" in *_onnx_frontend.so* | *_ir_frontend.so*) ;; *) rm -f "$f" ;; esac; done \
 && test -n "$(ls "$ov"/libs/libopenvino_onnx_frontend.so.*)" \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

# ---------------------------------------------------------------------------------------------
# bundles: the served models: the teacher and the few-step students (STUDENTS, the Makefile's list;
# a static test keeps the two equal). The students share the teacher's text encoder (90 MB): COPY
# does not keep the host's hard links, so identical files become relative symlinks here. torch
# lives only in this stage (never in a runtime image).
FROM builder AS bundles
ARG PIP_OPTIONS=""
ARG BUNDLES_SOURCE=export
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG STUDENTS="mm-alt-k8 pd-k4"
COPY requirements/export.lock /tmp/export.lock
COPY deploy/docker/wheelhouse-export/ /wheelhouse-export/
COPY models/teacher/ /src/models/teacher/
COPY models/students/ /src/models/students/
COPY results/teacher/ /src/results/teacher/
COPY results/students/ /src/results/students/
COPY results/precision/ /src/results/precision/
COPY scripts/export-bundle.sh /src/scripts/export-bundle.sh
COPY deploy/docker/host-bundles/ /prebuilt/
RUN set -eu; \
    if [ "$BUNDLES_SOURCE" = context ]; then \
        mkdir /bundles; \
        for m in teacher $STUDENTS; do \
            test -f "/prebuilt/$m/manifest.json" \
              || { echo "BUNDLES_SOURCE=context: no host bundle '$m'; run 'make docker-bundles' first" >&2; exit 1; }; \
            cp -a "/prebuilt/$m" "/bundles/$m"; \
        done; \
    elif [ "$BUNDLES_SOURCE" = export ]; then \
        python3 -m venv /opt/export; \
        /opt/export/bin/pip install ${PIP_OPTIONS} --require-hashes --no-deps --find-links /wheelhouse-export \
            --extra-index-url "$TORCH_INDEX" -r /tmp/export.lock; \
        /opt/export/bin/pip install ${PIP_OPTIONS} --no-deps --no-build-isolation /src; \
        for m in teacher $STUDENTS; do \
            HF_HUB_OFFLINE=1 FEWSTEP_EXPORT="/opt/export/bin/fewstep export" bash /src/scripts/export-bundle.sh "$m" "/bundles/$m"; \
        done; \
        rm -rf /bundles/.cache; \
    else \
        echo "BUNDLES_SOURCE must be export or context, not '$BUNDLES_SOURCE'" >&2; exit 1; \
    fi; \
    for m in $STUDENTS; do \
        for f in text_encoder.onnx tokenizer.json; do \
            if cmp -s "/bundles/teacher/$f" "/bundles/$m/$f"; then ln -sf "../teacher/$f" "/bundles/$m/$f"; fi; \
        done; \
    done; \
    chmod -R u=rwX,go=rX /bundles; \
    for m in teacher $STUDENTS; do \
        /opt/venv/bin/python -c "import sys; from fewstep.bundle import load_manifest; load_manifest(sys.argv[1], verify=True)" \
            "/bundles/$m"; \
    done

# ---------------------------------------------------------------------------------------------
# cpu: the default runtime. Non-root, exec-form entrypoint, health check on /readyz.
FROM ${BASE_IMAGE} AS cpu
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    FEWSTEP_BUNDLES=/opt/fewstep/bundles \
    FEWSTEP_DEFAULT_MODEL=mm-alt-k8 \
    FEWSTEP_HOST=0.0.0.0 \
    FEWSTEP_PORT=8000 \
    FEWSTEP_BACKEND__KIND=auto \
    FEWSTEP_TUNING_CACHE=/var/cache/fewstep/tuning.json
# The tuning cache keeps the start-up timings (the backend choice, the batch profile) per machine,
# so a restarted container serves the same choice without measuring again (service/tuning.py);
# compose and Kubernetes mount a volume here so that it outlives the container.
RUN groupadd --system --gid 10001 fewstep \
 && useradd --system --uid 10001 --gid fewstep --home-dir /var/lib/fewstep --create-home fewstep \
 && mkdir -p /var/cache/fewstep && chown fewstep:fewstep /var/cache/fewstep
COPY --from=builder /opt/venv /opt/venv
COPY --from=bundles /bundles /opt/fewstep/bundles
COPY deploy/entrypoint.sh /usr/local/bin/fewstep-entrypoint
USER 10001:10001
WORKDIR /var/lib/fewstep
EXPOSE 8000
# /readyz turns 200 after the bundles loaded and warmed up; start-period covers that.
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('FEWSTEP_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["/usr/local/bin/fewstep-entrypoint"]
CMD []

# ---------------------------------------------------------------------------------------------
# gpu: CUDA runtime base, onnxruntime-gpu (CUDA and TensorRT providers) and native TensorRT. The
# entrypoint builds the TensorRT engines for this GPU into the cache volume on first start
# (FEWSTEP_BACKEND__ENGINE_CACHE, keyed by GPU, TensorRT version, graph and precision), then serves.
# Not built or run on the CPU-only CI machines.
FROM ${GPU_BASE_IMAGE} AS gpu
ARG PIP_OPTIONS=""
ARG ONNXRUNTIME_GPU_VERSION=1.31.1
ARG TENSORRT_VERSION=11.4.0.106
ARG CUDA_PYTHON_VERSION=12.9.0
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/docker/wheelhouse/ /wheelhouse/
COPY requirements/serve.lock /tmp/serve.lock
COPY pyproject.toml README.md /src/
COPY fewstep/ /src/fewstep/
COPY fewstep_cli/ /src/fewstep_cli/
COPY shapesworld/ /src/shapesworld/
COPY service/ /src/service/
COPY distill/ /src/distill/
COPY bench/ /src/bench/
# The serving lock, then onnxruntime swapped for onnxruntime-gpu (the same module) beside the GPU
# packages (pinned by the ARGs above; pip resolves what they add).
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install ${PIP_OPTIONS} --require-hashes --no-deps --find-links /wheelhouse -r /tmp/serve.lock \
 && /opt/venv/bin/pip uninstall -y -q onnxruntime \
 && /opt/venv/bin/pip install ${PIP_OPTIONS} --find-links /wheelhouse \
        "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" "tensorrt-cu12==${TENSORRT_VERSION}" \
        "cuda-python==${CUDA_PYTHON_VERSION}" \
 && /opt/venv/bin/pip install ${PIP_OPTIONS} --no-deps --no-build-isolation /src \
 && /opt/venv/bin/pip uninstall -y -q setuptools \
 && rm -rf /src /wheelhouse /tmp/serve.lock \
 && groupadd --system --gid 10001 fewstep \
 && useradd --system --uid 10001 --gid fewstep --home-dir /var/lib/fewstep --create-home fewstep \
 && mkdir -p /var/cache/fewstep/trt && chown fewstep:fewstep /var/cache/fewstep/trt
COPY --from=bundles /bundles /opt/fewstep/bundles
COPY deploy/entrypoint.sh /usr/local/bin/fewstep-entrypoint
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    FEWSTEP_BUNDLES=/opt/fewstep/bundles \
    FEWSTEP_DEFAULT_MODEL=mm-alt-k8 \
    FEWSTEP_HOST=0.0.0.0 \
    FEWSTEP_PORT=8000 \
    FEWSTEP_BACKEND__KIND=tensorrt \
    FEWSTEP_BACKEND__DEVICE=cuda \
    FEWSTEP_BACKEND__PRECISION=fp16 \
    FEWSTEP_BACKEND__ENGINE_CACHE=/var/cache/fewstep/trt
USER 10001:10001
WORKDIR /var/lib/fewstep
VOLUME ["/var/cache/fewstep/trt"]
EXPOSE 8000
# The first start builds engines (minutes on a large model); start-period allows for it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('FEWSTEP_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["/usr/local/bin/fewstep-entrypoint"]
CMD []
