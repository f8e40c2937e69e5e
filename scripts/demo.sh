#!/usr/bin/env bash
# berth quick start: a throwaway server, an ECR repository, an image pushed with skopeo, a FARGATE
# task that prints a line, its exit status and its CloudWatch log events.
#
#   make demo                      # or: bash scripts/demo.sh (after make deps image build)
#
# Env: BERTH_BIN (default target/debug/berth), PORT (default 5150; another free one if busy),
#      BERTH_TEST_IMAGE (default build/busybox-oci).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

BERTH_BIN=${BERTH_BIN:-$ROOT/target/debug/berth}
IMAGE_DIR=${BERTH_TEST_IMAGE:-$ROOT/build/busybox-oci}
AWS_BIN=${AWS_BIN:-$ROOT/.venv/bin/aws}
PORT=${PORT:-5150}

export AWS_DEFAULT_REGION=us-east-1
export AWS_PAGER="" AWS_EC2_METADATA_DISABLED=true

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

[ -x "$BERTH_BIN" ] || die "$BERTH_BIN not built (run: make build)"
[ -x "$AWS_BIN" ] || die "$AWS_BIN missing (run: make deps)"
command -v skopeo >/dev/null || die "skopeo missing (run: make deps)"
if [ ! -f "$IMAGE_DIR/index.json" ]; then
    python3 scripts/build-test-image.py "$IMAGE_DIR" --tag 1
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if port_busy "$PORT"; then
    old=$PORT
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo "demo: port $old is busy, using $PORT"
fi
EP=http://127.0.0.1:$PORT
REG=127.0.0.1:$PORT

DATA_DIR=$(mktemp -d /tmp/berth-demo.XXXXXX)
# berth creates its task bridge (berth0) and tagged iptables rules on first use; if this demo is
# what creates them, it removes them again on exit.
BRIDGE_WAS_THERE=no
ip link show berth0 >/dev/null 2>&1 && BRIDGE_WAS_THERE=yes
LOG=$(mktemp /tmp/berth-demo-server.XXXXXX.log)
SERVER_PID=""

cleanup() {
    rc=$?
    set +e +o pipefail
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -s "$LOG" ]; then
        echo "demo: failed ($rc); last lines of the server log:" >&2
        tail -n 40 "$LOG" >&2
    fi
    # task rootfs mounts live under the data dir: unmount (deepest first) before removing it
    if [ -d "$DATA_DIR" ]; then
        findmnt -rn -o TARGET 2>/dev/null | { grep -F "$DATA_DIR/" || true; } | sort -r | while read -r m; do
            umount -l "$m" 2>/dev/null
        done
        rm -rf --one-file-system "$DATA_DIR"
    fi
    if [ "$BRIDGE_WAS_THERE" = no ]; then
        for t in filter nat; do
            iptables -t "$t" -S 2>/dev/null | grep -F -- '--comment "berth:berth0"' | sed 's/^-A /-D /' |
                while read -r rule; do eval "iptables -t $t $rule" 2>/dev/null; done
        done
        ip link del berth0 2>/dev/null
    fi
    rm -f "$LOG"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

aws() { "$AWS_BIN" --endpoint-url "$EP" "$@"; }

step "berth server --listen $REG --data-dir $DATA_DIR"
"$BERTH_BIN" server --listen "$REG" --data-dir "$DATA_DIR" >"$LOG" 2>&1 &
SERVER_PID=$!
for i in $(seq 300); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$EP/v2/" || true)
    [ "$code" != "000" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "server exited before answering"
    [ "$i" -eq 300 ] && die "server did not answer GET /v2/ within 30s"
    sleep 0.1
done
echo "GET /v2/ -> HTTP $code"

step "eval \$(berth credentials --data-dir $DATA_DIR)   # the access key berth created"
eval "$("$BERTH_BIN" credentials --data-dir "$DATA_DIR")"
echo "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID"

step "aws ecr create-repository --repository-name busybox"
aws ecr create-repository --repository-name busybox \
    --query 'repository.repositoryUri' --output text

step "skopeo copy --dest-creds AWS:\$(aws ecr get-login-password) oci:$IMAGE_DIR:1 docker://$REG/busybox:1"
skopeo copy --dest-tls-verify=false --dest-creds "AWS:$(aws ecr get-login-password)" \
    "oci:$IMAGE_DIR:1" "docker://$REG/busybox:1"

step "aws ecs create-cluster --cluster-name demo"
aws ecs create-cluster --cluster-name demo --query 'cluster.clusterArn' --output text

step "aws ecs register-task-definition (family hello, FARGATE, 256 CPU units / 512 MiB)"
aws ecs register-task-definition \
    --family hello \
    --requires-compatibilities FARGATE \
    --network-mode awsvpc \
    --cpu 256 --memory 512 \
    --container-definitions '[{
        "name": "app",
        "image": "000000000000.dkr.ecr.us-east-1.amazonaws.com/busybox:1",
        "essential": true,
        "command": ["sh", "-c", "echo hello from berth; uname -a"],
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": "/ecs/hello",
                "awslogs-region": "us-east-1",
                "awslogs-stream-prefix": "ecs"
            }
        }
    }]' \
    --query 'taskDefinition.taskDefinitionArn' --output text

step "aws ecs run-task --cluster demo --launch-type FARGATE --task-definition hello"
TASK_ARN=$(aws ecs run-task --cluster demo --launch-type FARGATE --task-definition hello \
    --network-configuration 'awsvpcConfiguration={subnets=[subnet-12345678]}' \
    --query 'tasks[0].taskArn' --output text)
[ -n "$TASK_ARN" ] && [ "$TASK_ARN" != "None" ] || die "run-task started no task"
echo "$TASK_ARN"
TASK_ID=${TASK_ARN##*/}

step "aws ecs wait tasks-stopped"
aws ecs wait tasks-stopped --cluster demo --tasks "$TASK_ARN"

step "aws ecs describe-tasks"
aws ecs describe-tasks --cluster demo --tasks "$TASK_ARN" --output table \
    --query 'tasks[0].{lastStatus: lastStatus, stopCode: stopCode, stoppedReason: stoppedReason, exitCode: containers[0].exitCode}'

step "aws logs get-log-events --log-group-name /ecs/hello --log-stream-name ecs/app/$TASK_ID"
msgs=""
for _ in $(seq 50); do
    msgs=$(aws logs get-log-events --log-group-name /ecs/hello --log-stream-name "ecs/app/$TASK_ID" \
        --start-from-head --query 'events[].message' --output json)
    [ "$msgs" != "[]" ] && break
    sleep 0.2
done
printf '%s\n' "$msgs" | python3 -c 'import json, sys; [print(m) for m in json.load(sys.stdin)]'

step "done (server stopped and $DATA_DIR removed on exit)"
