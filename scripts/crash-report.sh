#!/usr/bin/env bash
# Native backtraces from the core files a crashed test run left (called by .ci/run when `make test`
# fails). CI twice saw pytest die of a segfault that printed no Python traceback. The second time the
# signal's si_code was SI_KERNEL (128): the kernel could not deliver a signal to a handler on the
# thread's signal stack (OpenVINO had left it on freed memory; service.backends.openvino.shared_core),
# so no handler, faulthandler's included, ever ran. The report prints si_code for that reason: 128
# means look for a broken signal stack, not for a bad pointer at the faulting instruction.
# Usage: scripts/crash-report.sh [DIR]   (DIR/core, DIR/core.N; prints nothing when there is none)
set -uo pipefail
dir="${1:-.}"
cores=()
for f in "$dir"/core "$dir"/core.[0-9]*; do
    [ -f "$f" ] && cores+=("$f")
done
[ ${#cores[@]} -eq 0 ] && exit 0
python="$(readlink -f "$dir/.venv/bin/python" 2>/dev/null || command -v python3)"
for core in "${cores[@]}"; do
    echo "=== crash report: $core ($(stat -c %s "$core") bytes), $(file -b "$core" 2>/dev/null | cut -c1-160)"
    if ! command -v gdb >/dev/null 2>&1; then
        echo "gdb is not installed: no backtrace (scripts/install-system-deps.sh installs it)"
        continue
    fi
    # The faulting thread first (gdb selects it): native frames, then its Python frames (py-bt,
    # from CPython's gdb extension where the interpreter ships it), then every thread's innermost
    # native frames.
    gdb -batch -nx -iex "set auto-load safe-path /" -ex 'p $_siginfo.si_code' -ex "bt 40" -ex "py-bt" -ex "info threads" \
        -ex "thread apply all bt 12" "$python" "$core" 2>&1 | head -n 600
done
