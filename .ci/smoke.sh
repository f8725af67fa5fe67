#!/usr/bin/env bash
# Smoke test of the built executable: copied alone into an empty directory and run with an empty
# environment, where no Node.js and no node_modules can help it. Where we are root and can make a
# mount namespace, the system's node binary is hidden too, so a hidden dependency on it fails here.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
exe="$here/dist/peerup"
[ -x "$exe" ] || { echo "smoke: $exe missing; run npm run build" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$exe" "$work/peerup"
ln -s peerup "$work/relay-server"

inner=$(cat <<'INNER'
set -euo pipefail
cd "$1"
if command -v node >/dev/null 2>&1 && node --version >/dev/null 2>&1; then
  echo "smoke: note: a node binary is still reachable on PATH (could not hide it)" >&2
fi
relay=/ip4/198.18.0.1/tcp/7777/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN
run() { echo "+ $*" >&2; "$@"; }
run ./peerup version
run ./peerup --version
run ./peerup init --non-interactive --relay "$relay" --dir ./node
run ./peerup --config ./node/config.yaml whoami
run ./peerup --config ./node/config.yaml status --json > status.json
grep -q '"peerId": "12D3KooW' status.json
run ./peerup debug selftest --json > selftest.json
grep -q '"addon": "embedded"' selftest.json
grep -q '"offerType": "offer"' selftest.json
run ./relay-server version
./relay-server version | grep -q '^relay-server '
run ./relay-server setup --dir ./relay
run ./relay-server config validate --config ./relay/relay-server.yaml
# Completion asks the executable itself; the man page comes out of it.
run ./peerup --config ./node/config.yaml completion bash | bash -n
./peerup --config ./node/config.yaml __complete -- ping '' | head -1 | grep -qx words
run ./peerup man > peerup.1
grep -q '^\.TH PEERUP 1 ' peerup.1
# The README's run command, from the executable alone: a relay and two nodes, one reaching the other.
run ./peerup demo > demo.txt
grep -q "home's service answered" demo.txt
grep -q '3 sent, 3 received' demo.txt
# The web dashboard: its files come out of the executable (SEA assets), not a source tree.
printf '\nui:\n  listen_address: 127.0.0.1:0\n' >> ./node/config.yaml
./peerup --config ./node/config.yaml daemon --log-level info 2> daemon.log &
daemon=$!
# A check that fails below must not leave the daemon running (nor its directory in use).
trap 'kill "$daemon" 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q '"dashboard served"' daemon.log && break; sleep 0.1; done
ui=$(grep '"dashboard served"' daemon.log | grep -o '127\.0\.0\.1:[0-9]*' | head -1)
[ -n "$ui" ] || { cat daemon.log >&2; echo "smoke: the dashboard is not served" >&2; exit 1; }
run ./peerup --config ./node/config.yaml ui > ui-url.txt
grep -q "^http://$ui/login#" ui-url.txt
for f in / /app.js /app.css /uqr.mjs; do
  run curl -fsS -o /dev/null "http://$ui$f"
done
# Into a file, not a pipe: `grep -q` leaves at the first match, and curl, still writing a larger
# app.js, fails with "Failed writing body" (23) under pipefail.
curl -fsS -o app.js "http://$ui/app.js"
grep -q "from './uqr.mjs'" app.js
run ./peerup --config ./node/config.yaml daemon stop
wait "$daemon"
# Usage errors exit 2, failures 1.
set +e
./peerup frobnicate 2>/dev/null; [ $? -eq 2 ] || { echo "smoke: usage error did not exit 2" >&2; exit 1; }
./peerup --config ./missing.yaml whoami 2>/dev/null; [ $? -eq 1 ] || { echo "smoke: error did not exit 1" >&2; exit 1; }
set -e
echo "smoke: ok" >&2
INNER
)

cmd=(env -i PATH=/usr/bin:/bin HOME="$work/home" PEERUP_CACHE_DIR="$work/cache" bash -c "$inner" smoke "$work")
node_path=$(command -v node || true)
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && [ -n "$node_path" ] \
  && unshare --mount --propagation private true 2>/dev/null; then
  # Bind /dev/null over every node binary on the default PATH, only inside this mount namespace.
  hide=""
  for n in /usr/bin/node /bin/node /usr/local/bin/node "$(readlink -f "$node_path")"; do
    [ -e "$n" ] && hide+="mount --bind /dev/null $n; "
  done
  unshare --mount --propagation private bash -c "$hide exec \"\$@\"" hide "${cmd[@]}"
else
  "${cmd[@]}"
fi
