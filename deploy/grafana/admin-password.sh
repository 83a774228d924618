#!/bin/sh
# Grafana's entrypoint in the compose stack: an admin password that is never a known default.
#   GRAFANA_ADMIN_PASSWORD set: that one (refused if it is a well-known default such as "admin").
#   Unset: a random one, generated at the first start into the Grafana volume (mode 600) and reused
#   at every later start; read it with
#     docker compose exec grafana cat /var/lib/grafana/.fewstep-admin-password
# Grafana applies GF_SECURITY_ADMIN_PASSWORD only when it creates the admin user (its first start
# on an empty volume); to change it later: docker compose exec grafana grafana cli admin reset-admin-password NEW
# Then Grafana's own entrypoint runs. The two paths can be moved for tests (tests/deploy/test_compose.py).
set -eu
file="${FEWSTEP_GRAFANA_PASSWORD_FILE:-/var/lib/grafana/.fewstep-admin-password}"
run="${FEWSTEP_GRAFANA_RUN:-/run.sh}"

if [ -n "${GRAFANA_ADMIN_PASSWORD:-}" ]; then
    case "$(printf '%s' "$GRAFANA_ADMIN_PASSWORD" | tr 'A-Z' 'a-z')" in
        admin | password | grafana | changeme | prom-operator | 123456 | 12345678)
            echo "GRAFANA_ADMIN_PASSWORD is a well-known default; choose another, or unset it for a generated one" >&2
            exit 64
            ;;
    esac
    GF_SECURITY_ADMIN_PASSWORD="$GRAFANA_ADMIN_PASSWORD"
elif [ -s "$file" ]; then
    GF_SECURITY_ADMIN_PASSWORD="$(cat "$file")"
else
    umask 077
    GF_SECURITY_ADMIN_PASSWORD="$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)"
    printf '%s\n' "$GF_SECURITY_ADMIN_PASSWORD" >"$file"
    echo "generated Grafana's admin password (user admin) into $file: docker compose exec grafana cat $file" >&2
fi
export GF_SECURITY_ADMIN_PASSWORD
unset GRAFANA_ADMIN_PASSWORD
exec "$run" "$@"
