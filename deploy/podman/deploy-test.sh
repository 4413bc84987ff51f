#!/usr/bin/env bash
# `make deploy-test`: build the image and run the server and four hospital sites from the project's own
# Kubernetes overlays with `podman kube play` on this machine (127.0.0.1 only), run the headless report from
# the host against them, compare it with the simulation, and tear everything down, also when a step fails.
# Needs root, podman, runc, debootstrap, kubectl, and the project's .venv (make setup). Phases are timed.
# `deploy-test.sh down` only removes what an interrupted run left behind.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
here=deploy/podman
python=${PYTHON:-$root/.venv/bin/python}
work=${DEPLOY_TEST_DIR:-$root/.deploy-test}
image=localhost/fedkit-remote:deploy-test
export CONTAINERS_CONF=$root/$here/containers.conf CONTAINERS_STORAGE_CONF=$root/$here/storage.conf
export FEDKIT_DATA_DIR=${FEDKIT_DATA_DIR:?set FEDKIT_DATA_DIR to the folder of the UCI files}

for tool in podman runc debootstrap kubectl; do
    command -v "$tool" >/dev/null || { echo "deploy-test: $tool is missing (apt-get install podman runc debootstrap)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "deploy-test: needs root (debootstrap, podman's host networking)" >&2; exit 1; }

# One deploy test at a time on a machine: they would share the server's ports and podman storage.
mkdir -p /run/fedkit-deploy-test
exec 9>/run/fedkit-deploy-test/lock
flock --wait 1200 9

mkdir -p "$work"
if [ "${1:-}" = down ]; then  # `make deploy-test-down`: remove what an interrupted run left
    exec "$python" "$here/federation.py" down --work "$work"
fi
"$python" "$here/federation.py" down --work "$work" >/dev/null  # leftovers of an interrupted run
finish() {
    rc=$?
    "$python" "$here/federation.py" down --work "$work" || rc=1
    [ "$rc" = 0 ] && echo "deploy-test: passed" || echo "deploy-test: FAILED (exit $rc)" >&2
    exit "$rc"
}
trap finish EXIT
# Long steps run in the background so that a signal interrupts the wait, reaches the step, and the tear-down runs.
child=
step() {
    "$@" &
    child=$!
    wait "$child"
}
interrupted() {
    [ -z "$child" ] || { kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; }
    exit 143
}
trap interrupted INT TERM

t0=$SECONDS
step "$here/base-image.sh" >"$work/base-image"
base=$(cat "$work/base-image")
echo "deploy-test: base image: $((SECONDS - t0)) s"

# pip inside the build verifies TLS with the host's CA bundle when one is configured (PIP_CERT or `pip config`).
cert=${PIP_CERT:-$("$python" -m pip config get global.cert 2>/dev/null || true)}
build() {
    step podman build --quiet --format docker --network host --build-arg BASE_IMAGE="$base" \
        ${cert:+--volume "$cert:/run/pip-ca.crt:ro" --build-arg PIP_CERT=/run/pip-ca.crt} \
        -f deploy/docker/Dockerfile "$@" . >/dev/null
}
t0=$SECONDS
# The build stage is tagged too, so that pruning the previous builds keeps its cached dependency layer.
build --target build -t "$image-build"
build -t "$image"
podman image prune --force >/dev/null
size=$(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')
echo "deploy-test: image build: $((SECONDS - t0)) s; $image is $size"

step "$python" "$here/federation.py" run --work "$work" --image "$image" --data-dir "$FEDKIT_DATA_DIR" \
    ${ROUNDS:+--rounds "$ROUNDS"}
