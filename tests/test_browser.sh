#!/usr/bin/env bash
# test_browser.sh: runs the browser tests in headless Debian Chromium: the web
# page (tests/browser/test_browser.mjs) and cross-origin calls with access
# tokens (tests/browser/test_cors.mjs). Installs nothing but the npm packages
# pinned in tests/browser/package-lock.json (npm ci, when they are missing or
# older than the lock file). Prints PASS/FAIL/SKIP lines for tests/run.sh.
set -u
cd "$(dirname "$0")/.."
dir=tests/browser
chromium=${CHROMIUM_BIN:-/usr/bin/chromium}

if [ ! -x "$chromium" ]; then
    echo "SKIP browser.all: Chromium is not installed ($chromium); 'make deps' installs Debian's chromium package"
    exit 0
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "SKIP browser.all: node and npm are not installed (Debian packages nodejs, npm)"
    exit 0
fi
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
    echo "SKIP browser.all: node $(node --version) is too old; playwright-core needs node 20 or newer"
    exit 0
fi

stamp=$dir/node_modules/.package-lock.json
if [ ! -f "$dir/node_modules/playwright-core/package.json" ] || [ "$dir/package-lock.json" -nt "$stamp" ]; then
    echo "# browser: npm ci in $dir"
    mkdir -p build
    # One retry: a dropped registry connection is not a test failure.
    npm_ci() { (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error --fetch-retries=5); }
    if ! npm_ci >build/browser-npm.log 2>&1 && ! { sleep 5; npm_ci >build/browser-npm.log 2>&1; }; then
        echo "FAIL browser.npm_ci: 'npm ci' in $dir failed: $(tail -n 5 build/browser-npm.log | tr '\n' ' ')"
        exit 1
    fi
fi

# Both run even when the first fails; the exit status is the worse one.
rc=0
node "$dir/test_browser.mjs" || rc=1
node "$dir/test_cors.mjs" || rc=1
exit $rc
