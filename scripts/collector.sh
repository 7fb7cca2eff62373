#!/usr/bin/env bash
# npm run collector:build | collector:validate
# Builds auditrace-collector from collector-config/builder.yaml with the machine's Go (module and
# build caches are Go's own, so a rebuild is incremental), and validates every shipped config.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILDER_VERSION=v0.159.0
BIN=collector-build/auditrace-collector
MIN_GO=1.25

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    echo "auditrace: Go is not installed or not on PATH; the collector build needs Go >= $MIN_GO (https://go.dev/dl/)" >&2
    exit 2
  fi
  local v
  v=$(go env GOVERSION | sed 's/^go//')
  if [ "$(printf '%s\n%s\n' "$MIN_GO" "$v" | sort -V | head -1)" != "$MIN_GO" ]; then
    echo "auditrace: Go $v is too old; the collector builder $BUILDER_VERSION needs Go >= $MIN_GO" >&2
    exit 2
  fi
}

case "${1:-build}" in
  build)
    need_go
    go run "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION" --config collector-config/builder.yaml
    "$BIN" --version
    ;;
  validate)
    [ -x "$BIN" ] || { echo "auditrace: $BIN not built; run: npm run collector:build" >&2; exit 2; }
    status=0
    for cfg in collector-config/*.yaml collector-config/k8s/*.collector.yaml; do
      [ -e "$cfg" ] || continue
      case "$(basename "$cfg")" in builder.yaml) continue ;; esac
      if "$BIN" validate --feature-gates=exporter.file.nativeCompression,stanza.synchronousLogEmitter --config="$cfg" >/tmp/auditrace-validate.log 2>&1; then
        echo "valid: $cfg"
      else
        echo "INVALID: $cfg"; cat /tmp/auditrace-validate.log; status=1
      fi
    done
    exit $status
    ;;
  *) echo "usage: $0 build|validate" >&2; exit 2 ;;
esac
