#!/bin/sh
# Container entrypoint of the fewstep images (exec form: `fewstep serve` becomes PID 1's child via
# exec, so SIGTERM from `docker stop` / Kubernetes reaches the service and drains it).
#
# With FEWSTEP_BACKEND__KIND=tensorrt (the GPU image's default), first builds the TensorRT engines
# of every bundle for this GPU into FEWSTEP_BACKEND__ENGINE_CACHE (a volume): the cache is keyed
# by GPU model, TensorRT version, graph sha256 and precision, so a later start, or a replica on the
# same kind of GPU sharing the volume, finds them and goes straight to serving. The build runs
# under a lock on the cache, so replicas starting together build once. Arguments are passed on to
# `fewstep serve`; FEWSTEP_* variables configure the rest (service/settings.py).
set -eu

if [ "${FEWSTEP_BACKEND__KIND:-onnxruntime}" = tensorrt ]; then
    cache="${FEWSTEP_BACKEND__ENGINE_CACHE:-/var/cache/fewstep/trt}"
    precision="${FEWSTEP_BACKEND__PRECISION:-fp16}"
    [ "$precision" = auto ] && precision=fp16
    bundles="${FEWSTEP_BUNDLES:-/opt/fewstep/bundles}"
    mkdir -p "$cache"
    echo "fewstep-entrypoint: TensorRT engines ($precision) for $bundles into $cache"
    if command -v flock >/dev/null 2>&1; then
        flock "$cache/.build.lock" fewstep build-engines --bundles "$bundles" --engine-cache "$cache" --precision "$precision"
    else
        fewstep build-engines --bundles "$bundles" --engine-cache "$cache" --precision "$precision"
    fi
fi

exec fewstep serve "$@"
