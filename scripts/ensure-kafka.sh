#!/usr/bin/env bash
# A local Apache Kafka broker set up as the cluster's is, for `make run-kafka` and the system
# tests; prints its address, 127.0.0.1:$OWN_KAFKA_PORT, as the last line of stdout (everything
# else goes to stderr).
#
# The cluster runs Strimzi, whose `scram-sha-512` listener requires SASL SCRAM-SHA-512 without
# TLS, and its topic operator creates exactly the KafkaTopics of k8s/base/kafka/topics.yaml
# (auto.create.topics.enable=false). So does this broker: the same Kafka, one combined KRaft
# broker+controller on loopback, the SCRAM user created when its storage is formatted, the
# manifests' topics and partition counts (1 replica). A client that works here (the Dapr
# component, rdkafka with OpenSSL) meets the same authentication and topics as in the cluster.
#
#   scripts/ensure-kafka.sh               start the broker (or reuse the one running from
#                                         $KAFKA_DIR); returns once it accepts SCRAM clients and
#                                         every topic exists. It runs on, detached: its pid is in
#                                         $KAFKA_DIR/kafka.pid, its log $KAFKA_DIR/kafka.log.
#   scripts/ensure-kafka.sh stop          stop the broker of $KAFKA_DIR (SIGTERM, SIGKILL after
#                                         15 s); nothing if none runs.
#   scripts/ensure-kafka.sh --tools-only  only fetch what is needed (before a Kafka build).
#
# Environment (defaults in brackets):
#   KAFKA_DIR             storage, config, log and pid file; one broker per directory, formatted
#                         once and reused [${TMPDIR:-/tmp}/dapr-todo-kafka-$UID]
#   OWN_KAFKA_PORT        the SCRAM client listener on 127.0.0.1 [59092]; the controller
#                         listener takes a free loopback port of its own
#   KAFKA_SCRAM_USER      the SCRAM-SHA-512 user [dapr-todo]
#   KAFKA_SCRAM_PASSWORD  its password [dapr-todo-local]; fixed when $KAFKA_DIR is formatted.
#                         Both printable ASCII without a comma, double quote or backslash
#   TEST_KAFKA_BROKERS    if set, printed as it is when it accepts connections (a broker of
#                         one's own), and nothing is started
#   DAPR_TODO_CACHE       where the Kafka jars go [${XDG_CACHE_HOME:-~/.cache}/dapr-todo]
#   KAFKA_VERSION         the Kafka release [4.4.0, below]
#
# Needs java (17 or later, with javac) and mvn: Maven fetches Kafka and its dependencies from
# Maven Central into $DAPR_TODO_CACHE/kafka-$KAFKA_VERSION (and ~/.m2), once; the marker file
# `ready` there names the version and what the cache was made from. Measured on 2 cores:
#   --tools-only, nothing cached          ~55 s (~66 MB into ~/.m2)
#   --tools-only, ~/.m2 already filled    ~25 s (mvn 5 s, javac 3 s, one throwaway broker run
#                                          that records the class data sharing archives)
#   --tools-only, cache current           ~0.02 s, nothing fetched
#   start on a new $KAFKA_DIR             ~3.5 s to ready (format, listen, create 12 topics);
#                                          ~3 s on kept storage, 0.03 s when one already runs;
#                                          4 started at once ~10 s each
#   stop                                  ~0.6 s
#   an idle broker                        ~170 MB resident
set -euo pipefail

# The newest release on Maven Central when this was written (4.1.1 was tried too, and works).
KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"

say() { printf 'ensure-kafka: %s\n' "$*" >&2; }

root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/tools/kafka"
cache="${DAPR_TODO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dapr-todo}/kafka-$KAFKA_VERSION"
PORT="${OWN_KAFKA_PORT:-59092}"
DIR="${KAFKA_DIR:-${TMPDIR:-/tmp}/dapr-todo-kafka-$(id -u)}"
# Absolute (the broker's command line names it, and callers look for it there), but not
# resolved through symlinks: the caller's spelling must stay a part of it.
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
SCRAM_USER="${KAFKA_SCRAM_USER:-dapr-todo}"
SCRAM_PASSWORD="${KAFKA_SCRAM_PASSWORD:-dapr-todo-local}"
# Kafka's --add-scram parser splits at every comma and keeps quotes; server.properties is read
# as Latin-1 and a backslash there would need escaping twice (Java properties, then JAAS). So
# printable ASCII without those three, which the passwords of this project are.
plain_credentials() {
  local LC_ALL=C
  case "$SCRAM_USER$SCRAM_PASSWORD" in *[!\ -~]* | *[,\"\\]*) return 1 ;; esac
}
if ! plain_credentials; then
  say "KAFKA_SCRAM_USER and KAFKA_SCRAM_PASSWORD must be printable ASCII without a comma, a double quote or a backslash"
  exit 64
fi

mode="${1:-start}"
case "$mode" in
  start | stop | --tools-only) ;;
  *) say "usage: $0 [--tools-only | stop]"; exit 64 ;;
esac

listens() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

# The pid in $1/kafka.pid if that process is the broker started with $1's config: a pid is soon
# reused by another process, another test's broker say.
broker_pid() {
  local pid
  pid="$(cat "$1/kafka.pid" 2>/dev/null)" || return 1
  # grep reads all of its input (no -q): under pipefail, a grep that quits early can fail tr.
  [ -n "$pid" ] && { tr '\0' '\n' < "/proc/$pid/cmdline"; } 2>/dev/null |
    grep -xF -- "$1/server.properties" > /dev/null && echo "$pid"
}

# Whether process $1 runs: a broker that is our own child stays a zombie until waited for.
alive() {
  local state
  state="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" && [ -n "$state" ] && [ "$state" != Z ]
}

# Waits until the broker of $1 has exited, not just closed its port, so that the next one on
# that storage starts alone. Kafka's controlled shutdown takes ~2 s. Fails if it took SIGKILL.
stop_broker() {
  local pid
  pid="$(broker_pid "$1")" || { rm -f "$1/kafka.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    say "the broker (pid $pid) did not stop within 15 s of SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.1; done
    wait "$pid" 2>/dev/null || true
    rm -f "$1/kafka.pid"
    return 1
  fi
  wait "$pid" 2>/dev/null || true
  rm -f "$1/kafka.pid"
}

if [ "$mode" = stop ]; then
  stop_broker "$DIR" || true
  exit 0
fi

# librdkafka is built from source with OpenSSL for SCRAM: the headers and pkg-config.
if ! { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl; }; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing OpenSSL headers for librdkafka (apt-get install libssl-dev pkg-config)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config >&2
  else
    say "OpenSSL headers are missing. Install them with: sudo apt-get install -y libssl-dev pkg-config"; exit 1
  fi
fi

# A free loopback port: asked of the kernel where python3 is there, else guessed and checked.
free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  else
    local port
    while :; do
      port=$((30000 + RANDOM % 20000))
      listens "127.0.0.1:$port" || { echo "$port"; return; }
    done
  fi
}

# Small heap (the tests' traffic is tiny; 128 MB of it would go to the log cleaner's buffer,
# see log.cleaner.dedupe.buffer.size). C1 only and serial GC: starting a broker takes ~5 s of
# CPU instead of ~8 s with the JVM's defaults (~3 s with the class data sharing archive
# below), which counts when several tests start theirs at once on 2 cores; idle, ~170 MB
# resident instead of ~235 MB.
jvm_flags=(-Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData
  -XX:+ExitOnOutOfMemoryError "-Dlog4j2.configurationFile=$tools/log4j2.properties")

# Class data sharing archives, once ensure_tools has made them.
share_broker=(-Xshare:auto) share_tool=(-Xshare:auto)

# The topics of the cluster's manifests, as NAME=PARTITIONS.
topics=()
while read -r topic; do topics+=("$topic"); done < <(
  awk '/topicName:/ {name = $2} /partitions:/ {print name "=" $2}' "$root/k8s/base/kafka/topics.yaml")
if [ "${#topics[@]}" -eq 0 ]; then say "no topics found in k8s/base/kafka/topics.yaml"; exit 1; fi

# Writes $1/server.properties for client port $2 and controller port $3.
write_config() {
  cat > "$1/server.properties" <<EOF
# Written by scripts/ensure-kafka.sh at every start (the controller port may change).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$3
controller.listener.names=CONTROLLER
# Clients as in the cluster (Strimzi's scram-sha-512 listener). The broker's own connections
# use it too, as the user; the controller listener cannot take SCRAM (its credentials live in
# the metadata it serves), so it is plaintext, on loopback only.
listeners=SCRAM://127.0.0.1:$2,CONTROLLER://127.0.0.1:$3
advertised.listeners=SCRAM://127.0.0.1:$2
listener.security.protocol.map=SCRAM:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SCRAM
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.scram.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$SCRAM_USER" password="$SCRAM_PASSWORD";
log.dirs=$1/data
auto.create.topics.enable=false
# One broker: every internal topic with one replica, and fewer partitions than the 50 meant
# for spreading load over brokers (each costs files, memory and start time).
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=5
# A consumer group starts consuming at once rather than waiting 3 s for more members.
group.initial.rebalance.delay.ms=0
log.cleaner.dedupe.buffer.size=8388608
num.network.threads=2
num.io.threads=4
EOF
}

# Formats $1's storage once, with the SCRAM user in its first metadata. The credentials are
# recorded (as a hash) so that a later run with others fails clearly instead of at login.
credentials="$(printf '%s\n%s\n' "$SCRAM_USER" "$SCRAM_PASSWORD" | sha256sum | cut -d' ' -f1)"
same_credentials() {
  if [ -e "$1/formatted" ] && [ "$(cat "$1/formatted")" != "$credentials" ]; then
    say "$1 was formatted for another KAFKA_SCRAM_USER or KAFKA_SCRAM_PASSWORD; remove it to start afresh"
    return 1
  fi
}

format_storage() {
  same_credentials "$1" || return 1
  if [ -e "$1/formatted" ]; then return 0; fi
  rm -rf "$1/data"
  # The controller port is not used by formatting; the config is written anew at start.
  write_config "$1" "$PORT" 0
  if ! java "${jvm_flags[@]}" "${share_broker[@]}" -cp "$cache/lib/*" kafka.tools.StorageTool format \
      --config "$1/server.properties" --cluster-id "$(cluster_id)" \
      --add-scram "SCRAM-SHA-512=[name=\"$SCRAM_USER\",password=\"$SCRAM_PASSWORD\"]" \
      >> "$1/kafka.log" 2>&1; then
    say "formatting $1/data failed; the end of $1/kafka.log:"
    tail -n 20 "$1/kafka.log" >&2
    return 1
  fi
  echo "$credentials" > "$1/formatted"
}

# A random cluster id in Kafka's form (a UUID, base64url without padding). One that starts
# with "-" would be read as an option by the storage tool, so, as Kafka's own Uuid.randomUuid
# does, draw again.
cluster_id() {
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    case "$id" in -*) ;; *) echo "$id"; return ;; esac
  done
}

# Starts the broker of $1 on client port $2, detached; extra JVM flags follow. Returns once it
# listens; a broker that exits first (its controller port taken meanwhile, say) is started again
# with another controller port, up to 3 times, and each failure shows the end of its log.
start_broker() {
  local dir="$1" port="$2" attempt pid offset
  shift 2
  for attempt in 1 2 3; do
    write_config "$dir" "$port" "$(free_port)"
    offset=$(($(stat -c %s "$dir/kafka.log" 2>/dev/null || echo 0) + 1))
    # setsid: a Ctrl-C meant for the caller does not reach the broker. All descriptors go to the
    # log (the caller's $(...) would otherwise wait for the broker to exit), and the locks
    # (fds 8 and 9) are closed so that the broker does not hold them.
    (exec setsid java "${jvm_flags[@]}" "$@" "-Dkafka.logs.dir=$dir" -cp "$cache/lib/*" \
      kafka.Kafka "$dir/server.properties") < /dev/null >> "$dir/kafka.log" 2>&1 8>&- 9>&- &
    pid=$!
    echo "$pid" > "$dir/kafka.pid"
    # Up to 2 minutes: several brokers starting at once on 2 cores take their time.
    for _ in $(seq 1 1200); do
      if listens "127.0.0.1:$port"; then return 0; fi
      alive "$pid" || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    say "the broker did not start listening on 127.0.0.1:$port (attempt $attempt); from $dir/kafka.log:"
    # This attempt's part of the log, without stack frames: the cause is near its end.
    tail -c "+$offset" "$dir/kafka.log" | grep -v $'^\tat ' | tail -n 12 >&2 || true
    sleep 1
  done
  rm -f "$dir/kafka.pid"
  return 1
}

# Creates what is missing of the manifests' topics, and returns once a SCRAM client sees them.
# $1: the broker's port; extra JVM flags follow.
ensure_topics() {
  local port="$1"
  shift
  KAFKA_SCRAM_USER="$SCRAM_USER" KAFKA_SCRAM_PASSWORD="$SCRAM_PASSWORD" \
    java "${jvm_flags[@]}" -Ddapr-todo.log.level=warn "$@" -cp "$cache/lib/*:$cache/ensure-topics.jar" \
    EnsureTopics "127.0.0.1:$port" 60 "${topics[@]}" >&2
}

# The jars, the compiled EnsureTopics and the class data sharing archives in $cache; the marker
# names what they were made from, and nothing is done while it matches.
ensure_tools() {
  local want
  want="kafka $KAFKA_VERSION $(cat "$tools/pom.xml" "$tools/EnsureTopics.java" | sha256sum | cut -d' ' -f1)"
  # And the JVM: an archive made by another build of it is of no use.
  local java_bin
  java_bin="$(readlink -f "$(command -v java 2>/dev/null)" 2>/dev/null || true)"
  want="$want $java_bin $(stat -c %Y.%s "${java_bin%/bin/java}/lib/server/libjvm.so" 2>/dev/null || true)"
  if [ "$(cat "$cache/ready" 2>/dev/null)" = "$want" ]; then return 0; fi

  local missing=""
  command -v java >/dev/null 2>&1 || missing="$missing java"
  command -v javac >/dev/null 2>&1 || missing="$missing javac"
  command -v mvn >/dev/null 2>&1 || missing="$missing mvn"
  if [ -n "$missing" ]; then
    say "missing:$missing. Kafka $KAFKA_VERSION needs Java 17 or later and Maven;" \
      "on Debian: sudo apt-get install -y default-jdk-headless maven"
    exit 1
  fi
  local java_major
  java_major="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
  if [ "${java_major%%.*}" -lt 17 ] 2>/dev/null; then
    say "Kafka $KAFKA_VERSION needs Java 17 or later; java is $java_major"; exit 1
  fi

  mkdir -p "$cache"
  # Parallel tests all come here on a cold cache: one fetches, the others wait for it.
  exec 8> "$cache.lock"
  flock 8
  if [ "$(cat "$cache/ready" 2>/dev/null)" = "$want" ]; then exec 8>&-; return 0; fi
  rm -f "$cache/ready"
  rm -rf "$cache/lib" "$cache/classes" "$cache/ensure-topics.jar" "$cache/maven" "$cache"/*.jsa*
  say "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $cache (once)"
  # Its output only when it fails: even -q -B leaves colour codes behind.
  if ! mvn -B -q -f "$tools/pom.xml" dependency:copy-dependencies \
      "-Dkafka.version=$KAFKA_VERSION" "-Dkafka.lib=$cache/lib" > "$cache/mvn.log" 2>&1; then
    cat "$cache/mvn.log" >&2
    say "mvn could not fetch Kafka $KAFKA_VERSION (is Maven Central reachable?)"; exit 1
  fi
  rm -f "$cache/mvn.log"
  rm -rf "$cache/maven"
  # Compiled once here rather than by `java EnsureTopics.java` at every start (~1 s each); a
  # jar, as class data sharing takes no directory on the class path.
  javac -nowarn -d "$cache/classes" -cp "$cache/lib/*" "$tools/EnsureTopics.java" >&2
  jar --create --file "$cache/ensure-topics.jar" -C "$cache/classes" . >&2
  rm -rf "$cache/classes"

  # Class data sharing: one run of a throwaway broker and of EnsureTopics records the classes
  # they load, and later JVMs map them instead of loading and verifying them from the jars
  # again: a broker listens after ~2 s instead of ~3.5 s, on a third less CPU, and
  # EnsureTopics takes ~1.3 s instead of ~2 s.
  say "recording the classes a broker loads (a throwaway broker, once)"
  local scratch="$cache/cds-run" port
  rm -rf "$scratch" && mkdir -p "$scratch"
  port="$(free_port)"
  # The broker writes its archive as it exits: one it did not finish (killed) is not kept.
  # -Xlog: the JVM lists every class it leaves out of an archive (those of slf4j 1.7, built for
  # Java 5, among them).
  if format_storage "$scratch" \
      && start_broker "$scratch" "$port" "-XX:ArchiveClassesAtExit=$cache/broker.jsa.new" -Xlog:cds=off \
      && ensure_topics "$port" "-XX:ArchiveClassesAtExit=$cache/tool.jsa.new" -Xlog:cds=off \
      && stop_broker "$scratch" && [ -s "$cache/broker.jsa.new" ] && [ -s "$cache/tool.jsa.new" ]; then
    mv "$cache/broker.jsa.new" "$cache/broker.jsa"
    mv "$cache/tool.jsa.new" "$cache/tool.jsa"
  else
    stop_broker "$scratch" || true
    say "no class data sharing archive (see above); brokers start without it, ~1.5 s slower"
    rm -f "$cache"/*.jsa.new
  fi
  rm -rf "$scratch"
  echo "$want" > "$cache/ready"
  exec 8>&-
}

ensure_tools
if [ "$mode" = --tools-only ]; then exit 0; fi

if [ -n "${TEST_KAFKA_BROKERS:-}" ]; then
  if listens "$TEST_KAFKA_BROKERS"; then echo "$TEST_KAFKA_BROKERS"; exit 0; fi
  say "TEST_KAFKA_BROKERS=$TEST_KAFKA_BROKERS does not accept connections"; exit 1
fi

# A JVM given an archive it cannot use (another JDK) warns and goes on without it. The format
# JVM takes the broker's: most of what it loads, the broker loads too.
[ -e "$cache/broker.jsa" ] && share_broker+=("-XX:SharedArchiveFile=$cache/broker.jsa")
[ -e "$cache/tool.jsa" ] && share_tool+=("-XX:SharedArchiveFile=$cache/tool.jsa")

mkdir -p "$DIR"
# One run at a time per directory: a second one waits, then finds the broker the first started.
exec 9> "$DIR/.lock"
flock 9

same_credentials "$DIR" || exit 1
if pid="$(broker_pid "$DIR")"; then
  if listens "127.0.0.1:$PORT" && grep -qxF "advertised.listeners=SCRAM://127.0.0.1:$PORT" "$DIR/server.properties"; then
    echo "127.0.0.1:$PORT"; exit 0
  fi
  say "the broker of $DIR (pid $pid) does not listen on 127.0.0.1:$PORT; restarting it"
  stop_broker "$DIR" || true
fi
if listens "127.0.0.1:$PORT"; then
  say "127.0.0.1:$PORT is taken by another process than a broker of $DIR; set OWN_KAFKA_PORT to a free port"
  exit 1
fi

format_storage "$DIR"
say "starting Apache Kafka $KAFKA_VERSION on 127.0.0.1:$PORT, SCRAM-SHA-512 user $SCRAM_USER (log $DIR/kafka.log)"
start_broker "$DIR" "$PORT" "${share_broker[@]}" || exit 1
if ! ensure_topics "$PORT" "${share_tool[@]}"; then
  say "the broker on 127.0.0.1:$PORT is not ready (see above); stopping it. The end of $DIR/kafka.log:"
  tail -n 10 "$DIR/kafka.log" >&2 || true
  stop_broker "$DIR" || true
  exit 1
fi
echo "127.0.0.1:$PORT"
