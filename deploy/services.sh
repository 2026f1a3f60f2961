#!/usr/bin/env bash
# Local Kafka (KRaft) + Apicurio Registry (+ Jaeger, when Go is installed) for Squeeze development and CI.
#
#   deploy/services.sh fetch    download once into the cache (idempotent)
#   deploy/services.sh start    fetch if needed, start them with fresh data, wait until ready
#   deploy/services.sh stop     stop them (SIGTERM, then SIGKILL); never fails if nothing runs
#   deploy/services.sh status   exit 0 only if Kafka and the registry are ready (alias: check)
#   deploy/services.sh env      print the export lines for SQUEEZE_BROKERS / SQUEEZE_REGISTRY
#                               (and SQUEEZE_JAEGER_OTLP / SQUEEZE_JAEGER_QUERY while Jaeger runs)
#   deploy/services.sh restart  stop + start
#   deploy/services.sh logs     print the last lines of every log file
#
# Everything is downloaded from Maven Central into $SQUEEZE_SERVICES_CACHE
# (default: deploy/.cache, git-ignored). Only Java 17+ and Maven are needed;
# curl is used when present. Jaeger v2 (the trace backend of docs/TRACING.md) is built once from
# source with Go 1.24+ (deploy/jaeger/go.mod pins it) into the same cache; without Go it is skipped
# with a warning (JAEGER=off skips it, JAEGER=on makes a failed build fatal). Prometheus is built the
# same way (deploy/prometheus/go.mod) but not started: tests run it with their own scrape config.
# See deploy/README.md.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

HOST=127.0.0.1
KAFKA_VERSION=3.9.1                                   # keep in sync with deploy/kafka/pom.xml
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
REGISTRY_PORT="${REGISTRY_PORT:-18081}"
# Apicurio versions tried in order; the first one already in the cache wins, otherwise the
# first one that can be downloaded. 3.1.7 is preferred; 3.0.9 is the fallback that is known
# to be obtainable (see README). Override with APICURIO_VERSION="x.y.z".
APICURIO_VERSIONS="${APICURIO_VERSION:-3.1.7 3.0.9}"
START_TIMEOUT="${SERVICES_START_TIMEOUT:-120}"        # seconds, per service
STOP_TIMEOUT="${SERVICES_STOP_TIMEOUT:-30}"           # seconds before SIGKILL
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"
REGISTRY_HEAP_OPTS="${REGISTRY_HEAP_OPTS:--Xmx512m}"
KAFKA_AUTO_CREATE_TOPICS="${KAFKA_AUTO_CREATE_TOPICS:-false}"
KAFKA_CLUSTER_ID="c3F1ZWV6ZS1sb2NhbC1rYQ"              # base64url("squeeze-local-ka"), fixed is fine
JAEGER_VERSION=1.75.0                                 # keep in sync with deploy/jaeger/go.mod
JAEGER="${JAEGER:-auto}"                              # auto | on | off
JAEGER_OTLP_PORT="${JAEGER_OTLP_PORT:-14318}"
JAEGER_QUERY_PORT="${JAEGER_QUERY_PORT:-16686}"
JAEGER_QUERY_GRPC_PORT="${JAEGER_QUERY_GRPC_PORT:-16685}"
JAEGER_HEALTH_PORT="${JAEGER_HEALTH_PORT:-13133}"
MOTO_VERSION=5.2.5                                    # S3-compatible server (moto's server mode, from PyPI)
DUCKDB_HTTPFS_VERSION=1.5.5                           # DuckDB httpfs extension (PyPI), matches @duckdb/node-api
S3="${S3:-auto}"                                      # auto | off
S3_PORT="${S3_PORT:-19000}"
PROMETHEUS_VERSION=3.16.0                             # Go module v0.316.0; keep in sync with deploy/prometheus/go.mod
MAVEN_REPO_URL="${SQUEEZE_MAVEN_REPO_URL:-https://repo.maven.apache.org/maven2}"
MVN="${MVN:-mvn}"
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

CACHE="${SQUEEZE_SERVICES_CACHE:-$SCRIPT_DIR/.cache}"
[[ "$CACHE" == /* ]] || CACHE="$PWD/$CACHE"
CACHE="${CACHE%/}"
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
RUN="$CACHE/run"
LOGS="$RUN/logs"
KAFKA_PID="$RUN/kafka.pid"
REGISTRY_PID="$RUN/registry.pid"
JAEGER_PID="$RUN/jaeger.pid"
S3_PID="$RUN/s3.pid"
MOTO_HOME="$CACHE/moto-$MOTO_VERSION"
JAEGER_BIN="${SQUEEZE_JAEGER_BIN:-$CACHE/jaeger-$JAEGER_VERSION/jaeger}"
PROMETHEUS_BIN="${SQUEEZE_PROMETHEUS_BIN:-$CACHE/prometheus-$PROMETHEUS_VERSION/prometheus}"
REGISTRY_URL="http://$HOST:$REGISTRY_PORT/apis/ccompat/v7"
BROKERS="$HOST:$KAFKA_PORT"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Serialise concurrent invocations (parallel CI jobs sharing one cache). The lock fd (9) is
# closed for the long-running JVMs, otherwise they would hold the lock until they exit.
lock() {
  mkdir -p "$CACHE"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.lock"
    flock -w 600 9 || die "could not lock $CACHE/.lock"
  fi
}

require_java() {
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (Java 17+ required; set JAVA_HOME)"
  local v major
  v="$("$JAVA" -version 2>&1 | awk -F'"' '/version/ { print $2; exit }')"
  major="${v%%.*}"; [[ "$major" == 1 ]] && major="$(echo "$v" | cut -d. -f2)"
  [[ "$major" =~ ^[0-9]+$ && "$major" -ge 17 ]] || die "Java 17+ required, found '$v' ($JAVA)"
}

# ---------------------------------------------------------------- fetch

fetch_kafka() {
  if [[ -f "$KAFKA_HOME/.complete" ]]; then return 0; fi
  command -v "$MVN" >/dev/null 2>&1 || die "maven ($MVN) not found; needed once to download Kafka"
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central ..."
  local t0 tmp; t0="$(now)"; tmp="$KAFKA_HOME.tmp"
  rm -rf "$tmp"; mkdir -p "$tmp/lib" "$CACHE/fetch-logs"
  if ! "$MVN" -B -q -f "$SCRIPT_DIR/kafka/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$tmp/lib" \
        >"$CACHE/fetch-logs/kafka.log" 2>&1; then
    tail -n 30 "$CACHE/fetch-logs/kafka.log" >&2
    die "maven could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
  fi
  [[ -f "$tmp/lib/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka_2.13-$KAFKA_VERSION.jar missing after download"
  touch "$tmp/.complete"
  rm -rf "$KAFKA_HOME"; mv "$tmp" "$KAFKA_HOME"
  log "Kafka $KAFKA_VERSION: $(ls "$KAFKA_HOME/lib" | wc -l) jars in $(elapsed "$t0")s"
}

# Download io.apicurio:apicurio-registry-app:<v>:tar.gz:all into $2.
# 1st choice: maven-dependency-plugin (uses ~/.m2 settings, mirrors, proxies).
# 2nd choice: plain HTTPS GET of the same file from Central with SHA-1 check; needed when
#   Maven refuses because the artifact's parent POM is not available in the repository.
download_apicurio() {
  local v="$1" dir="$2" name="apicurio-registry-app-$1-all.tar.gz" flog="$CACHE/fetch-logs/apicurio-$1.log"
  mkdir -p "$dir"
  if command -v "$MVN" >/dev/null 2>&1 &&
     "$MVN" -B -q "$DEP_PLUGIN:copy" -Dartifact="io.apicurio:apicurio-registry-app:$v:tar.gz:all" \
        -DoutputDirectory="$dir" >"$flog" 2>&1 && [[ -s "$dir/$name" ]]; then
    return 0
  fi
  command -v curl >/dev/null 2>&1 || return 1
  local url="$MAVEN_REPO_URL/io/apicurio/apicurio-registry-app/$v/$name" sha
  echo "maven failed, trying $url" >>"$flog"
  curl -fsSL --retry 3 -o "$dir/$name" "$url" 2>>"$flog" || return 1
  sha="$(curl -fsSL --retry 3 "$url.sha1" 2>>"$flog" | awk '{ print $1 }')" || return 1
  [[ "$(sha1sum "$dir/$name" | awk '{ print $1 }')" == "$sha" ]] || { echo "sha1 mismatch" >>"$flog"; return 1; }
}

fetch_registry() {
  local v
  for v in $APICURIO_VERSIONS; do
    if [[ -f "$CACHE/apicurio-$v/.complete" ]]; then echo "$v" >"$CACHE/apicurio.version"; return 0; fi
  done
  mkdir -p "$CACHE/fetch-logs"
  local t0 tmp; t0="$(now)"
  for v in $APICURIO_VERSIONS; do
    log "fetching Apicurio Registry $v (io.apicurio:apicurio-registry-app:$v:tar.gz:all) ..."
    tmp="$CACHE/apicurio-$v.tmp"; rm -rf "$tmp"
    if download_apicurio "$v" "$tmp/download"; then
      tar xzf "$tmp/download/apicurio-registry-app-$v-all.tar.gz" -C "$tmp" || die "cannot unpack apicurio $v"
      rm -rf "$tmp/download"
      touch "$tmp/.complete"
      rm -rf "$CACHE/apicurio-$v"; mv "$tmp" "$CACHE/apicurio-$v"
      echo "$v" >"$CACHE/apicurio.version"
      log "Apicurio Registry $v unpacked in $(elapsed "$t0")s"
      return 0
    fi
    rm -rf "$tmp"
    log "Apicurio Registry $v not obtainable (details: $CACHE/fetch-logs/apicurio-$v.log)"
  done
  die "none of the Apicurio Registry versions [$APICURIO_VERSIONS] could be downloaded"
}

registry_version() { cat "$CACHE/apicurio.version" 2>/dev/null || true; }

# 3.1+ ship the quarkus-app layout, 3.0.x a legacy *-runner.jar + lib/.
registry_jar() {
  local home="$CACHE/apicurio-$(registry_version)" j
  if [[ -f "$home/quarkus-app/quarkus-run.jar" ]]; then echo "$home/quarkus-app/quarkus-run.jar"; return; fi
  for j in "$home"/*-runner.jar "$home"/*/quarkus-app/quarkus-run.jar "$home"/*/*-runner.jar; do
    [[ -f "$j" ]] && { echo "$j"; return; }
  done
  die "no runnable jar found in $home"
}

# Jaeger v2 from source: `go build` of the module pinned in deploy/jaeger (first time: ~7 min on 2 cores,
# mostly downloading modules through the Go proxy; later builds come from Go's caches).
jaeger_wanted() {
  [[ "$JAEGER" == off ]] && return 1
  if [[ -x "$JAEGER_BIN" ]]; then return 0; fi
  if ! command -v go >/dev/null 2>&1; then
    [[ "$JAEGER" == on ]] && die "JAEGER=on but go is not installed (Go 1.24+ builds Jaeger $JAEGER_VERSION)"
    log "go not found: Jaeger and Prometheus are skipped (their tests skip); install Go (1.24+ for Jaeger, 1.26 for Prometheus) or set SQUEEZE_JAEGER_BIN"
    return 1
  fi
  return 0
}

# go_build NAME VERSION MODULE_DIR PACKAGE BIN: `go build -trimpath` of a pinned tool into BIN, once.
# Returns 1 (after a log line) when it cannot be built; NAME=on callers make that fatal.
go_build() {
  local name="$1" version="$2" dir="$3" pkg="$4" bin="$5" t0 flog
  [[ -x "$bin" ]] && return 0
  command -v go >/dev/null 2>&1 || { log "go not found: $name is skipped"; return 1; }
  flog="$CACHE/fetch-logs/$(basename "$dir").log"
  mkdir -p "$CACHE/fetch-logs" "$(dirname "$bin")"
  t0="$(now)"
  log "building $name $version from source (go build; the first build downloads its modules) ..."
  if ! (cd "$dir" && go build -trimpath -o "$bin.tmp" "$pkg") >"$flog" 2>&1; then
    tail -n 20 "$flog" >&2
    rm -f "$bin.tmp"
    log "could not build $name $version: it is skipped (its tests skip)"
    return 1
  fi
  mv "$bin.tmp" "$bin"
  log "$name $version built in $(elapsed "$t0")s"
}

fetch_jaeger() {
  jaeger_wanted || return 0
  go_build Jaeger "$JAEGER_VERSION" "$SCRIPT_DIR/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger "$JAEGER_BIN" && return 0
  [[ "$JAEGER" == on ]] && die "could not build Jaeger $JAEGER_VERSION"
  return 0
}

# Prometheus is only built (tests start it with their own scrape config); JAEGER=off skips it too.
# First build ~8 min on 2 cores, then from Go's caches.
fetch_prometheus() {
  [[ "$JAEGER" == off ]] && return 0
  go_build Prometheus "$PROMETHEUS_VERSION" "$SCRIPT_DIR/prometheus" github.com/prometheus/prometheus/cmd/prometheus "$PROMETHEUS_BIN" || true
}

# moto's S3 server (PyPI) in a venv: it honours conditional puts (If-None-Match: * answers 412 when
# the key exists), which exactly-once commits on object storage need. Skipped when pip cannot install it.
fetch_s3() {
  [[ "$S3" == off ]] && return 0
  [[ -f "$MOTO_HOME/.complete" ]] && return 0
  command -v python3 >/dev/null 2>&1 || { log "python3 not found: the S3 server is skipped"; return 0; }
  mkdir -p "$CACHE/fetch-logs"
  local t0; t0="$(now)"
  log "installing moto[server] $MOTO_VERSION (S3-compatible server) from PyPI ..."
  rm -rf "$MOTO_HOME"
  if ! { python3 -m venv "$MOTO_HOME" && "$MOTO_HOME/bin/pip" install -q "moto[server]==$MOTO_VERSION"; } >"$CACHE/fetch-logs/moto.log" 2>&1; then
    tail -n 10 "$CACHE/fetch-logs/moto.log" >&2
    rm -rf "$MOTO_HOME"
    log "could not install moto $MOTO_VERSION: the S3 server is skipped (its tests skip)"
    return 0
  fi
  touch "$MOTO_HOME/.complete"
  log "moto $MOTO_VERSION installed in $(elapsed "$t0")s"
}

# DuckDB's httpfs extension, so tests read shards over s3:// with an independent reader. DuckDB
# downloads extensions from its own site, which is not reachable here; PyPI ships the same binary.
# Its version must match @duckdb/node-api's engine (package.json). Optional: those tests skip.
fetch_httpfs() {
  [[ "$S3" == off ]] && return 0
  [[ -f "$MOTO_HOME/.complete" ]] || return 0
  [[ -f "$MOTO_HOME/.httpfs-$DUCKDB_HTTPFS_VERSION" ]] && return 0
  log "installing duckdb-extension-httpfs $DUCKDB_HTTPFS_VERSION from PyPI ..."
  if ! "$MOTO_HOME/bin/pip" install -q "duckdb-extension-httpfs==$DUCKDB_HTTPFS_VERSION" >"$CACHE/fetch-logs/httpfs.log" 2>&1; then
    tail -n 5 "$CACHE/fetch-logs/httpfs.log" >&2
    log "could not install DuckDB's httpfs extension: reading shards over s3:// in tests is skipped"
    return 0
  fi
  touch "$MOTO_HOME/.httpfs-$DUCKDB_HTTPFS_VERSION"
}
httpfs_path() {
  compgen -G "$MOTO_HOME/lib/python3*/site-packages/duckdb_extension_httpfs/extensions/v$DUCKDB_HTTPFS_VERSION/httpfs.duckdb_extension" | head -n 1
}

cmd_fetch() { fetch_kafka; fetch_registry; fetch_jaeger; fetch_prometheus; fetch_s3; fetch_httpfs; }

# ---------------------------------------------------------------- probes

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# Kafka protocol probe without any client: ApiVersions v0 request (api_key 18,
# correlation id 1, client id "sqzz"); ready when the reply carries correlation id 1
# and error_code 0. The socket only serves requests once the broker is unfenced.
kafka_api_ok() {
  local out
  out="$(timeout 5 bash -c '
      exec 3<>/dev/tcp/'"$HOST"'/'"$KAFKA_PORT"' || exit 1
      printf "\x00\x00\x00\x0e\x00\x12\x00\x00\x00\x00\x00\x01\x00\x04sqzz" >&3
      head -c 10 <&3 | od -An -tx1' 2>/dev/null)" || return 1
  out="$(echo $out)"
  [[ "${out:12:17}" == "00 00 00 01 00 00" ]]
}

http_status() {
  if command -v curl >/dev/null 2>&1; then
    curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" 2>/dev/null || true
  else
    local rest="${1#http://}" hostport path
    hostport="${rest%%/*}"; path="/${rest#*/}"
    timeout 5 bash -c 'exec 3<>/dev/tcp/'"${hostport%:*}"'/'"${hostport#*:}"' || exit 1
      printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "'"$path"'" "'"$hostport"'" >&3
      head -n 1 <&3' 2>/dev/null | awk '{ print $2 }' || true
  fi
}

registry_ready() { [[ "$(http_status "$REGISTRY_URL/subjects")" == 200 ]]; }
jaeger_ready() { [[ "$(http_status "http://$HOST:$JAEGER_HEALTH_PORT/status")" == 200 && "$(http_status "http://$HOST:$JAEGER_QUERY_PORT/api/services")" == 200 ]]; }
kafka_ready() { kafka_api_ok; }

# pid from file if it is alive and really is the process we started (guards against pid reuse)
live_pid() {
  local f="$1" marker="$2" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f" 2>/dev/null)"; [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker" || return 1
  fi
  echo "$pid"
}
kafka_pid() { live_pid "$KAFKA_PID" "kafka.Kafka $RUN/kafka-config/server.properties"; }
registry_pid() { live_pid "$REGISTRY_PID" "-Dsqueeze.services.cache=$CACHE"; }
jaeger_pid() { live_pid "$JAEGER_PID" "$SCRIPT_DIR/jaeger/config.yaml"; }
s3_pid() { live_pid "$S3_PID" "moto_server -H $HOST -p $S3_PORT"; }
s3_ready() { [[ "$(http_status "http://$HOST:$S3_PORT/")" == 200 ]]; }

rss_mib() { ps -o rss= -p "$1" 2>/dev/null | awk '{ printf "%.0f", $1 / 1024 }'; }

show_logs() {
  local n="${1:-30}" f
  for f in "$LOGS"/*; do
    [[ -s "$f" ]] || continue
    printf '\n----- last %s lines of %s -----\n' "$n" "$f" >&2
    tail -n "$n" "$f" >&2
  done
}

# ---------------------------------------------------------------- start / stop

write_kafka_config() {
  local cfg="$RUN/kafka-config"
  mkdir -p "$cfg"
  cat >"$cfg/server.properties" <<EOF
# generated by deploy/services.sh -- single combined broker+controller in KRaft mode
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$RUN/kafka-data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=$KAFKA_AUTO_CREATE_TOPICS
# images are large records: allow 16 MiB record batches (clients default to 1 MiB)
message.max.bytes=16777216
replica.fetch.max.bytes=16777216
delete.topic.enable=true
num.network.threads=2
num.io.threads=4
EOF
  cat >"$cfg/log4j.properties" <<EOF
# generated by deploy/services.sh -- WARN+ to a file; the startup banner logger at INFO
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$LOGS/kafka.log
log4j.appender.file.Append=true
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.Kafka=INFO
EOF
}

start_kafka() {
  write_kafka_config
  local cfg="$RUN/kafka-config" cp="$KAFKA_HOME/lib/*"
  if ! "$JAVA" -Xmx256m -Dlog4j.configuration="file:$cfg/log4j.properties" -cp "$cp" \
        kafka.tools.StorageTool format -t "$KAFKA_CLUSTER_ID" -c "$cfg/server.properties" --ignore-formatted \
        >"$LOGS/kafka-format.log" 2>&1; then
    show_logs 30; die "kafka storage format failed"
  fi
  # shellcheck disable=SC2086
  nohup "$JAVA" $KAFKA_HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
      -Dlog4j.configuration="file:$cfg/log4j.properties" -Dkafka.logs.dir="$LOGS" \
      -cp "$cp" kafka.Kafka "$cfg/server.properties" \
      >"$LOGS/kafka.out" 2>&1 </dev/null 9>&- &
  echo $! >"$KAFKA_PID"
}

start_registry() {
  local jar; jar="$(registry_jar)" || exit 1
  # shellcheck disable=SC2086
  (cd "$RUN" && exec nohup "$JAVA" $REGISTRY_HEAP_OPTS -XX:+ExitOnOutOfMemoryError \
      -Dsqueeze.services.cache="$CACHE" \
      -Dquarkus.http.host=$HOST -Dquarkus.http.port="$REGISTRY_PORT" \
      -Dapicurio.rest.deletion.artifact.enabled=true \
      -Dapicurio.rest.deletion.artifact-version.enabled=true \
      -Dapicurio.rest.deletion.group.enabled=true \
      -jar "$jar" >"$LOGS/registry.log" 2>&1 </dev/null) 9>&- &
  echo $! >"$REGISTRY_PID"
}

start_jaeger() {
  JAEGER_OTLP_PORT="$JAEGER_OTLP_PORT" JAEGER_QUERY_PORT="$JAEGER_QUERY_PORT" JAEGER_QUERY_GRPC_PORT="$JAEGER_QUERY_GRPC_PORT" \
  JAEGER_HEALTH_PORT="$JAEGER_HEALTH_PORT" nohup "$JAEGER_BIN" --config="file:$SCRIPT_DIR/jaeger/config.yaml" \
      >"$LOGS/jaeger.log" 2>&1 </dev/null 9>&- &
  echo $! >"$JAEGER_PID"
}

wait_jaeger_ready() {
  local t0="$1" deadline; deadline=$(( $(date +%s) + START_TIMEOUT ))
  until jaeger_ready; do
    jaeger_pid >/dev/null || { tail -n 30 "$LOGS/jaeger.log" >&2; log "Jaeger exited during startup"; return 1; }
    (( $(date +%s) >= deadline )) && { tail -n 30 "$LOGS/jaeger.log" >&2; log "Jaeger not ready after ${START_TIMEOUT}s"; return 1; }
    sleep 0.25
  done
  log "Jaeger ready after $(elapsed "$t0")s: OTLP/HTTP http://$HOST:$JAEGER_OTLP_PORT, query http://$HOST:$JAEGER_QUERY_PORT"
}

start_s3() {
  nohup "$MOTO_HOME/bin/moto_server" -H "$HOST" -p "$S3_PORT" >"$LOGS/s3.log" 2>&1 </dev/null 9>&- &
  echo $! >"$S3_PID"
}

# Poll both services together until both are ready; sets KAFKA_READY_S / REGISTRY_READY_S
# (seconds from each launch). On death or timeout: print the logs and return 1.
wait_both_ready() {
  local tk="$1" tr="$2" deadline
  KAFKA_READY_S=""; REGISTRY_READY_S=""
  deadline=$(( $(date +%s) + START_TIMEOUT ))
  while [[ -z "$KAFKA_READY_S" || -z "$REGISTRY_READY_S" ]]; do
    if [[ -z "$KAFKA_READY_S" ]]; then
      kafka_pid >/dev/null || { show_logs 30; log "Kafka exited during startup"; return 1; }
      kafka_ready && KAFKA_READY_S="$(elapsed "$tk")"
    fi
    if [[ -z "$REGISTRY_READY_S" ]]; then
      registry_pid >/dev/null || { show_logs 30; log "Apicurio Registry exited during startup"; return 1; }
      registry_ready && REGISTRY_READY_S="$(elapsed "$tr")"
    fi
    [[ -n "$KAFKA_READY_S" && -n "$REGISTRY_READY_S" ]] && break
    if (( $(date +%s) >= deadline )); then
      show_logs 30
      [[ -z "$KAFKA_READY_S" ]] && log "Kafka not ready after ${START_TIMEOUT}s"
      [[ -z "$REGISTRY_READY_S" ]] && log "Apicurio Registry not ready after ${START_TIMEOUT}s"
      return 1
    fi
    sleep 0.25
  done
}

# alive and not a zombie (some container inits never reap orphans)
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ -r "/proc/$1/stat" ]] || return 0
  [[ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

stop_one() {
  local name="$1" pid="$2" deadline
  kill -TERM "$pid" 2>/dev/null || return 0
  deadline=$(( $(date +%s) + STOP_TIMEOUT ))
  while alive "$pid"; do
    if (( $(date +%s) >= deadline )); then
      log "$name (pid $pid) still running after ${STOP_TIMEOUT}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  log "$name stopped (pid $pid)"
}

cmd_stop() {
  local kp rp jp sp
  kp="$(kafka_pid || true)"; rp="$(registry_pid || true)"; jp="$(jaeger_pid || true)"; sp="$(s3_pid || true)"
  [[ -n "$jp" ]] && stop_one "Jaeger" "$jp"
  [[ -n "$sp" ]] && stop_one "S3 server" "$sp"
  # registry first (no dependency on kafka with the default in-memory storage, but cheap)
  [[ -n "$rp" ]] && stop_one "Apicurio Registry" "$rp"
  [[ -n "$kp" ]] && stop_one "Kafka" "$kp"
  rm -f "$KAFKA_PID" "$REGISTRY_PID" "$JAEGER_PID" "$S3_PID"
  [[ -z "$kp$rp$jp$sp" ]] && log "nothing running"
  return 0
}

cmd_start() {
  require_java
  cmd_fetch
  cmd_stop >/dev/null 2>&1
  local p
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$REGISTRY_PORT"; do
    port_open "$HOST" "$p" && die "port $HOST:$p is already in use (set KAFKA_PORT / REGISTRY_PORT)"
  done
  rm -rf "$RUN/kafka-data" "$LOGS"
  mkdir -p "$RUN/kafka-data" "$LOGS"

  local rv tk tr; rv="$(registry_version)"
  tr="$(now)"; start_registry
  tk="$(now)"; start_kafka
  log "started Kafka $KAFKA_VERSION (pid $(cat "$KAFKA_PID")) and Apicurio Registry $rv (pid $(cat "$REGISTRY_PID")); waiting up to ${START_TIMEOUT}s each"

  if ! wait_both_ready "$tk" "$tr"; then cmd_stop; exit 1; fi
  # the startup banner follows the socket opening by a few ms; wait for it briefly for the record
  local i; for i in 1 2 3 4 5 6 7 8 9 10; do grep -q "Kafka Server started" "$LOGS/kafka.log" 2>/dev/null && break; sleep 0.2; done

  log "Kafka ready after ${KAFKA_READY_S}s, Apicurio Registry ready after ${REGISTRY_READY_S}s (logs: $LOGS)"
  echo "Kafka $KAFKA_VERSION          bootstrap servers: $BROKERS"
  echo "Apicurio Registry $rv   ccompat URL:       $REGISTRY_URL"
  if [[ "$JAEGER" != off && -x "$JAEGER_BIN" ]]; then
    local p tj
    for p in "$JAEGER_OTLP_PORT" "$JAEGER_QUERY_PORT" "$JAEGER_QUERY_GRPC_PORT" "$JAEGER_HEALTH_PORT"; do
      port_open "$HOST" "$p" && { cmd_stop; die "port $HOST:$p is already in use (set JAEGER_*_PORT or JAEGER=off)"; }
    done
    tj="$(now)"; start_jaeger
    if ! wait_jaeger_ready "$tj"; then
      [[ "$JAEGER" == on ]] && { cmd_stop; exit 1; }
      jp="$(jaeger_pid || true)"; [[ -n "$jp" ]] && stop_one "Jaeger" "$jp"
      log "Jaeger is skipped (tracing tests skip)"
    else
      echo "Jaeger $JAEGER_VERSION          OTLP/HTTP:         http://$HOST:$JAEGER_OTLP_PORT   query: http://$HOST:$JAEGER_QUERY_PORT"
    fi
  fi
  if [[ "$S3" != off && -f "$MOTO_HOME/.complete" ]]; then
    if port_open "$HOST" "$S3_PORT"; then
      log "port $HOST:$S3_PORT is in use: the S3 server is skipped (set S3_PORT)"
    else
      local ts i; ts="$(now)"; start_s3
      for i in $(seq 1 120); do s3_ready && break; s3_pid >/dev/null || break; sleep 0.25; done
      if s3_ready; then
        log "S3 server (moto $MOTO_VERSION) ready after $(elapsed "$ts")s"
        echo "S3 (moto $MOTO_VERSION)        endpoint:          http://$HOST:$S3_PORT"
      else
        tail -n 20 "$LOGS/s3.log" >&2
        sp="$(s3_pid || true)"; [[ -n "$sp" ]] && stop_one "S3 server" "$sp"
        log "the S3 server did not start: it is skipped (its tests skip)"
      fi
    fi
  fi
  echo "Use:  eval \"\$($0 env)\""
}

cmd_status() {
  local ok=0 kp rp rv kinfo rinfo; rv="$(registry_version)"
  kp="$(kafka_pid || true)"; rp="$(registry_pid || true)"
  if [[ -n "$kp" ]]; then kinfo="pid $kp, rss $(rss_mib "$kp") MiB, kafka $KAFKA_VERSION"; else kinfo="no process started by this script"; fi
  if [[ -n "$rp" ]]; then rinfo="pid $rp, rss $(rss_mib "$rp") MiB, apicurio $rv"; else rinfo="no process started by this script"; fi
  if kafka_ready; then echo "kafka:    READY  $BROKERS  ($kinfo)"; else echo "kafka:    DOWN   $BROKERS  ($kinfo)"; ok=1; fi
  if registry_ready; then echo "registry: READY  $REGISTRY_URL  ($rinfo)"; else echo "registry: DOWN   $REGISTRY_URL  ($rinfo)"; ok=1; fi
  if s3_ready; then echo "s3:       READY  http://$HOST:$S3_PORT  (moto $MOTO_VERSION, optional)"; else echo "s3:       DOWN   (optional)"; fi
  if jaeger_ready; then echo "jaeger:   READY  http://$HOST:$JAEGER_QUERY_PORT  (pid $(jaeger_pid || echo '?'))"; else echo "jaeger:   DOWN   (optional)"; fi
  return $ok
}

cmd_env() {
  echo "export SQUEEZE_BROKERS=$BROKERS"
  echo "export SQUEEZE_REGISTRY=$REGISTRY_URL"
  if jaeger_ready; then
    echo "export SQUEEZE_JAEGER_OTLP=http://$HOST:$JAEGER_OTLP_PORT"
    echo "export SQUEEZE_JAEGER_QUERY=http://$HOST:$JAEGER_QUERY_PORT"
  fi
  if [[ -x "$PROMETHEUS_BIN" ]]; then echo "export SQUEEZE_PROMETHEUS_BIN=$PROMETHEUS_BIN"; fi
  if s3_ready; then echo "export SQUEEZE_S3_ENDPOINT=http://$HOST:$S3_PORT"; fi
  local hf; hf="$(httpfs_path || true)"
  if [[ -n "$hf" ]]; then echo "export SQUEEZE_DUCKDB_HTTPFS=$hf"; fi
}

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  echo "Environment: KAFKA_PORT ($KAFKA_PORT) KAFKA_CONTROLLER_PORT ($KAFKA_CONTROLLER_PORT) REGISTRY_PORT ($REGISTRY_PORT)"
  echo "  SQUEEZE_SERVICES_CACHE ($CACHE) APICURIO_VERSION ($APICURIO_VERSIONS) SERVICES_START_TIMEOUT ($START_TIMEOUT)"
  echo "  S3 ($S3) S3_PORT ($S3_PORT)"
  echo "  JAEGER ($JAEGER) JAEGER_OTLP_PORT ($JAEGER_OTLP_PORT) JAEGER_QUERY_PORT ($JAEGER_QUERY_PORT) SQUEEZE_JAEGER_BIN ($JAEGER_BIN)"
  echo "  KAFKA_HEAP_OPTS ($KAFKA_HEAP_OPTS) REGISTRY_HEAP_OPTS ($REGISTRY_HEAP_OPTS) KAFKA_AUTO_CREATE_TOPICS ($KAFKA_AUTO_CREATE_TOPICS)"
}

case "${1:-help}" in
  fetch)        lock; cmd_fetch ;;
  start)        lock; cmd_start ;;
  stop)         lock; cmd_stop ;;
  restart)      lock; cmd_stop; cmd_start ;;
  status|check) cmd_status ;;
  env)          cmd_env ;;
  logs)         show_logs "${2:-50}" 2>&1 ;;
  help|-h|--help) usage ;;
  *)            usage >&2; exit 2 ;;
esac
