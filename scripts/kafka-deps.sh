#!/usr/bin/env bash
# Fetch the jars of a single-node Apache Kafka (KRaft) from Maven Central into the cache (idempotent).
#   $CKBPOOL_CACHE/kafka-<ver>/libs/*.jar   (CKBPOOL_CACHE defaults to ~/.cache/ckbpool)
# tests/support/kafka.py runs `java -cp '<libs>/*' kafka.Kafka server.properties` over that directory.
# The version and the dependency list live in deps/kafka/pom.xml. Needs: mvn, java >= 17.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
POM="$ROOT/deps/kafka/pom.xml"
CACHE="${CKBPOOL_CACHE:-$HOME/.cache/ckbpool}"
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1)"
[ -n "$VERSION" ] || { echo "kafka-deps: no <kafka.version> in $POM" >&2; exit 1; }
LIBS="$CACHE/kafka-$VERSION/libs"
STAMP="$LIBS/.complete"
POM_SUM="$(sha256sum "$POM" | cut -d' ' -f1)"
start=$(date +%s)

complete() {  # the stamp names the pom it came from and every jar, and every jar is still there
  [ -f "$STAMP" ] || return 1
  [ "$(head -n1 "$STAMP")" = "pom $POM_SUM" ] || return 1
  local jar
  while read -r jar; do [ -s "$LIBS/$jar" ] || return 1; done < <(tail -n +2 "$STAMP")
}

if complete; then
  echo "kafka $VERSION jars already in $LIBS ($(($(wc -l <"$STAMP") - 1)) jars)"
  exit 0
fi
command -v mvn >/dev/null || { echo "kafka-deps: mvn not found (apt-get install maven)" >&2; exit 1; }
command -v java >/dev/null || { echo "kafka-deps: java not found (apt-get install default-jdk-headless)" >&2; exit 1; }
echo "fetching kafka $VERSION jars from Maven Central into $LIBS ..."
TMP="$LIBS.tmp.$$"
rm -rf "$TMP"
trap 'rm -rf "$TMP"' EXIT
mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies -DoutputDirectory="$TMP" -DincludeScope=runtime
{ echo "pom $POM_SUM"; (cd "$TMP" && ls -1 -- *.jar); } >"$TMP/.complete"
rm -rf "$LIBS"
mv "$TMP" "$LIBS"
trap - EXIT
echo "kafka $VERSION: $(($(wc -l <"$STAMP") - 1)) jars, $(du -sh "$LIBS" | cut -f1) in $LIBS, took $(($(date +%s) - start))s"
