#!/usr/bin/env bash
# The Kafka exporter the stack runs (danielqsj/kafka-exporter, config.images.kafka_exporter), as a binary for
# tests/integration/test_kafka_exporter_secret.py: that test runs the exact command compose.yaml gives the
# container and checks the password reaches the exporter through its environment, never its argv.
#
#   $CKBPOOL_CACHE/bin/kafka_exporter   go install github.com/danielqsj/kafka_exporter@KAFKA_EXPORTER_VERSION
#
# The image has no stand-in (docker/local/README.md); the binary is the same source the image ships. Idempotent:
# a binary built from the pinned version (kafka_exporter.version beside it) is kept. Cold: 15 s of one core with a
# warm module cache. Without a Go toolchain the step says so and succeeds: the test then skips, naming this step.
set -euo pipefail
CACHE="${CKBPOOL_CACHE:-$HOME/.cache/ckbpool}"
VERSION="${CKBPOOL_KAFKA_EXPORTER_VERSION:-v1.9.0}"  # keep in step with config.images.kafka_exporter
mkdir -p "$CACHE/bin"
if ! command -v go >/dev/null; then
  echo "kafka-exporter-deps: kafka_exporter MISSING: no Go toolchain (its test will skip)"
  exit 0
fi
# the version it was built from: `go version -m` for a module build; a source build says (devel), so this step
# records the tag beside the binary
if [ -x "$CACHE/bin/kafka_exporter" ] && [ "$(cat "$CACHE/bin/kafka_exporter.version" 2>/dev/null)" = "$VERSION" ]; then
  echo "kafka-exporter-deps: kafka_exporter $VERSION present"
  exit 0
fi
t=$SECONDS
# from the module proxy; else from a checkout of the tag (CKBPOOL_KAFKA_EXPORTER_SRC, or a clone of GitHub's):
# some proxies serve the exporter's dependencies but not the exporter itself
if ! GOBIN="$CACHE/bin" nice go install -p 1 "github.com/danielqsj/kafka_exporter@$VERSION"; then
  src="${CKBPOOL_KAFKA_EXPORTER_SRC:-$CACHE/src/kafka_exporter-$VERSION}"
  if [ ! -f "$src/go.mod" ]; then
    timeout 120 git clone -q --depth 1 --branch "$VERSION" https://github.com/danielqsj/kafka_exporter "$src" || {
      echo "kafka-exporter-deps: kafka_exporter MISSING: neither the module proxy nor GitHub served $VERSION" \
           "(set CKBPOOL_KAFKA_EXPORTER_SRC to a checkout of the tag); its test will skip"
      exit 0
    }
  fi
  (cd "$src" && nice go build -p 1 -o "$CACHE/bin/kafka_exporter" .)
fi
echo "$VERSION" >"$CACHE/bin/kafka_exporter.version"
echo "kafka-exporter-deps: kafka_exporter $VERSION built in $((SECONDS - t))s"
