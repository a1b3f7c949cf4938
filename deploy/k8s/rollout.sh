#!/bin/sh
# Apply the CRM in the order a release needs: the stateful parts, then the migrations
# (waited for), then the apis and workers. Plain kubectl, no Helm or Argo hooks.
#   deploy/k8s/rollout.sh [KUSTOMIZATION_DIR]   (default deploy/k8s/base; NAMESPACE=crm)
set -eu
DIR=${1:-deploy/k8s/base}
NS=${NAMESPACE:-crm}
TIMEOUT=${TIMEOUT:-15m}
APPS='app.kubernetes.io/component in (api,worker,migrate,bootstrap)'

# 1. Namespace, settings, secrets template, the RabbitMQ and PostgreSQL clusters.
kubectl apply -k "$DIR" -l "app.kubernetes.io/component notin (api,worker,migrate,bootstrap)"
kubectl -n "$NS" wait --for=condition=Ready cluster.postgresql.cnpg.io --all --timeout="$TIMEOUT"
kubectl -n "$NS" wait --for=condition=AllReplicasReady rabbitmqcluster --all --timeout="$TIMEOUT"
# Each service's own broker user (and its credentials Secret) before anything connects.
kubectl -n "$NS" wait --for=condition=Ready users.rabbitmq.com --all --timeout="$TIMEOUT"

# 2. Migrations (and queue declarations) of the new release, before any new pod starts.
#    A Job's pod template is immutable: the previous release's finished Jobs go first.
kubectl -n "$NS" delete job -l "$APPS" --ignore-not-found --wait=true
kubectl apply -k "$DIR" -l app.kubernetes.io/component=migrate
kubectl -n "$NS" wait --for=condition=Complete job -l app.kubernetes.io/component=migrate \
  --timeout="$TIMEOUT"

# 3. Everything else: apis, workers, autoscalers, the first admin (a no-op once it exists).
kubectl apply -k "$DIR"
for deployment in $(kubectl -n "$NS" get deployment -l "$APPS" -o name); do
  kubectl -n "$NS" rollout status "$deployment" --timeout="$TIMEOUT"
done
kubectl -n "$NS" wait --for=condition=Complete job/gateway-bootstrap-admin --timeout="$TIMEOUT"
