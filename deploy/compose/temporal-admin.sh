#!/bin/sh
# Long-running admin container of the compose stack: once the Temporal frontend answers, makes
# sure the namespace exists and Slipway's search attributes are registered (the worker does the
# same at start-up; doing it here too means the Web UI can filter before the first worker runs),
# then stays up so operators can `docker compose exec temporal-admin temporal ...`.
# Its health check is `temporal operator cluster health` plus the namespace and attributes.
set -eu

: "${TEMPORAL_ADDRESS:=temporal:7233}"
: "${TEMPORAL_NAMESPACE:=default}"
: "${TEMPORAL_NAMESPACE_RETENTION:=720h}"
export TEMPORAL_ADDRESS TEMPORAL_NAMESPACE

until temporal operator cluster health 2>/dev/null | grep -q SERVING; do
  echo "waiting for the Temporal frontend at $TEMPORAL_ADDRESS"
  sleep 2
done

if ! temporal operator namespace describe -n "$TEMPORAL_NAMESPACE" >/dev/null 2>&1; then
  temporal operator namespace create -n "$TEMPORAL_NAMESPACE" --retention "$TEMPORAL_NAMESPACE_RETENTION"
fi
until temporal operator search-attribute list -n "$TEMPORAL_NAMESPACE" >/dev/null 2>&1; do
  echo "waiting for namespace $TEMPORAL_NAMESPACE"
  sleep 1
done

for sa in SlipwayUserId SlipwayCustomerId SlipwayAgentId SlipwayStatus SlipwayBilling; do
  if ! temporal operator search-attribute list -n "$TEMPORAL_NAMESPACE" | grep -qw "$sa"; then
    temporal operator search-attribute create -n "$TEMPORAL_NAMESPACE" --name "$sa" --type Keyword
  fi
done
echo "namespace $TEMPORAL_NAMESPACE ready with Slipway's search attributes"

# Stay up (and answer SIGTERM at once) for `docker compose exec temporal-admin temporal ...`.
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
