#!/usr/bin/env bash
# Creates the Kafka topics customer360 uses (CONTRACT.md section 6).
# Idempotent (--if-not-exists); run by the one-shot `kafka-init` compose
# service from the apache/kafka image, or by hand:
#   KAFKA_BOOTSTRAP=localhost:9092 KAFKA_BIN=/opt/kafka/bin deploy/kafka-topics.sh
set -euo pipefail

BOOTSTRAP="${KAFKA_BOOTSTRAP:-kafka:9092}"
KAFKA_BIN="${KAFKA_BIN:-/opt/kafka/bin}"
PARTITIONS="${C360_TOPIC_PARTITIONS:-6}"
DLQ_PARTITIONS="${C360_DLQ_PARTITIONS:-1}"
REPLICATION="${C360_TOPIC_REPLICATION:-1}"
# Dead letters are kept longer than the broker default so they can be inspected and replayed.
DLQ_RETENTION_MS="${C360_DLQ_RETENTION_MS:-1209600000}"   # 14 days

CONSUMED_TOPICS=(
  customer.created
  customer.updated
  contract.renewed
  support.issue.opened
  support.issue.closed
)
PRODUCED_TOPICS=(
  audit.lifecycle.updated
)

topics() { "${KAFKA_BIN}/kafka-topics.sh" --bootstrap-server "${BOOTSTRAP}" "$@"; }

# depends_on (service_healthy) normally guarantees the broker is up; retry anyway.
for attempt in $(seq 1 30); do
  if topics --list >/dev/null 2>&1; then
    break
  fi
  if [ "${attempt}" -eq 30 ]; then
    echo "kafka-topics: broker ${BOOTSTRAP} not reachable" >&2
    exit 1
  fi
  echo "kafka-topics: waiting for ${BOOTSTRAP} (${attempt}/30)"
  sleep 2
done

create() {
  local topic="$1" partitions="$2"
  shift 2
  echo "kafka-topics: ensuring ${topic} (partitions=${partitions}, rf=${REPLICATION})"
  topics --create --if-not-exists --topic "${topic}" \
    --partitions "${partitions}" --replication-factor "${REPLICATION}" "$@"
}

for topic in "${CONSUMED_TOPICS[@]}"; do
  create "${topic}" "${PARTITIONS}"
  create "${topic}.dlq" "${DLQ_PARTITIONS}" --config "retention.ms=${DLQ_RETENTION_MS}"
done
for topic in "${PRODUCED_TOPICS[@]}"; do
  create "${topic}" "${PARTITIONS}"
done

echo "kafka-topics: done; topics now:"
topics --list
