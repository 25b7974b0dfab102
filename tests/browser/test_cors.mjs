// test_cors.mjs: cross-origin calls and access tokens in a real browser.
// Starts build/imgclassd (IMGCLASSD_BIN) with random ResNet-18 weights, a
// token file and --cors-origins naming a second origin: a page served by
// this script on another port (http://127.0.0.1:P2). Headless Chromium then
// posts a JPEG with fetch() from that page (a preflighted request: it sends
// Content-Type: image/jpeg and Authorization), from a page the server does
// not allow (http://localhost:P2, another origin of the same server), and
// reads the errors (401, 413, 503 with Retry-After). It also drives the web
// page's token dialog. One line per case, as test_browser.mjs prints them.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer as startImgclassd, waitReady } from './imgclassd.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const BIN = path.resolve(ROOT, process.env.IMGCLASSD_BIN || 'build/imgclassd');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SHARED_IMAGES = path.resolve(ROOT, '..', 'shared', 'images');
const TOTAL_TIMEOUT_MS = 240_000;
const TOKEN = 'browser-test-token-0123456789abcdef';
const MAX_BODY = 400_000;    // --max-body-bytes: a larger JPEG gets 413
const BUDGET = 300_000;      // --max-inflight-bytes: a body between the two gets 503

let failures = 0;
const pass = (name) => console.log(`PASS cors_browser.${name}`);
function fail(name, why) {
    failures++;
    console.log(`FAIL cors_browser.${name}: ${String(why).replace(/\s+/g, ' ').slice(0, 600)}`);
}
const skip = (name, why) => console.log(`SKIP cors_browser.${name}: ${why}`);
class CheckError extends Error {}
function check(cond, why) {
    if (!cond) throw new CheckError(why);
}
async function runCase(name, fn) {
    try {
        await fn();
        pass(name);
    } catch (e) {
        fail(name, e instanceof CheckError ? e.message : (e && e.stack) || e);
    }
}

// ---------------------------------------------------------------------------
// The API server and the second origin

let server = null; // a Server from imgclassd.mjs

async function startServer(tokenFile, origin) {
    const r = await startImgclassd(BIN, ['--model', 'random:resnet18',
        '--static-dir', path.join(ROOT, 'static'), '--drain-seconds', '0',
        '--auth-token-file', tokenFile, '--cors-origins', origin,
        '--max-body-bytes', String(MAX_BODY), '--max-inflight-bytes', String(BUDGET)],
    (sv) => { server = sv; });
    return r.port;
}

function stopServer() {
    if (server) server.stop();
}

// The second origin: an empty page, from which the test calls the API.
function startOtherOrigin() {
    return new Promise((resolve) => {
        const s = http.createServer((req, res) => {
            res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
            res.end('<!doctype html><title>another app</title><p>another origin</p>');
        });
        s.listen(0, '127.0.0.1', () => resolve(s));
    });
}

// A JPEG of about n bytes: a shared photo, padded with a COM segment run
// (the server reads the size before it decodes anything).
function jpegOf(base, n) {
    if (!n || base.length >= n) return base;
    const parts = [base.subarray(0, 2)];
    let left = n - base.length;
    while (left > 0) {
        const len = Math.min(65533, Math.max(1, left - 4));
        const seg = Buffer.alloc(4 + len, 0x20);
        seg[0] = 0xff;
        seg[1] = 0xfe;
        seg.writeUInt16BE(len + 2, 2);
        parts.push(seg);
        left -= seg.length;
    }
    parts.push(base.subarray(2));
    return Buffer.concat(parts);
}

// In the page: POST the JPEG (base64) to url with fetch() and report what
// the page can see: status, exposed headers, JSON, or the fetch error.
async function postFrom(page, url, b64, token) {
    return page.evaluate(async ({ url, b64, token }) => {
        const body = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const headers = { 'Content-Type': 'image/jpeg' };
        if (token) headers.Authorization = `Bearer ${token}`;
        try {
            const r = await fetch(url, { method: 'POST', headers, body });
            let json = null;
            try {
                json = await r.json();
            } catch (_) { /* not JSON */ }
            const h = {};
            for (const k of ['retry-after', 'x-request-id', 'server-timing', 'www-authenticate'])
                h[k] = r.headers.get(k);
            return { status: r.status, headers: h, json };
        } catch (e) {
            return { error: String(e) };
        }
    }, { url, b64, token });
}

async function main() {
    if (!fs.existsSync(CHROMIUM)) {
        skip('all', `Chromium is not installed at ${CHROMIUM}`);
        return;
    }
    if (!fs.existsSync(BIN)) {
        fail('server', `${BIN} does not exist (make build/imgclassd)`);
        return;
    }
    const { chromium } = await import('playwright-core');
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imgclassd-cors-'));
    const tokenFile = path.join(tmp, 'tokens');
    fs.writeFileSync(tokenFile, `# test token\n${TOKEN}\n`);
    const other = await startOtherOrigin();
    const p2 = other.address().port;
    const allowed = `http://127.0.0.1:${p2}`;
    const denied = `http://localhost:${p2}`;
    let port;
    try {
        port = await startServer(tokenFile, allowed);
        await waitReady(`http://127.0.0.1:${port}`);
    } catch (e) {
        fail('server', e.message);
        other.close();
        return;
    }
    const api = `http://127.0.0.1:${port}`;
    let photo;
    try {
        const names = fs.readdirSync(SHARED_IMAGES).filter((n) => /\.jpe?g$/i.test(n)).sort();
        photo = fs.readFileSync(path.join(SHARED_IMAGES, names.find((n) => n.includes('tabby')) || names[0]));
    } catch (_) {
        photo = null;
    }
    const browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
            '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync',
            '--disable-dev-shm-usage'],
    });
    try {
        const ctx = await browser.newContext();
        const page = await ctx.newPage();
        if (!photo) {
            // No shared photos: draw one in the browser.
            await page.goto(allowed);
            photo = Buffer.from(await page.evaluate(async () => {
                const c = new OffscreenCanvas(320, 240);
                const g = c.getContext('2d');
                g.fillStyle = '#c84';
                g.fillRect(0, 0, 320, 240);
                const b = new Uint8Array(await (await c.convertToBlob({ type: 'image/jpeg' })).arrayBuffer());
                let s = '';
                for (const x of b) s += String.fromCharCode(x);
                return btoa(s);
            }), 'base64');
        }
        const b64 = photo.toString('base64');
        console.log(`# cors_browser: ${await browser.version()}, api ${api}, page ${allowed}, photo ${photo.length} B`);

        await runCase('allowed_origin_classifies', async () => {
            await page.goto(allowed);
            const r = await postFrom(page, `${api}/classify?topk=5`, b64, TOKEN);
            check(!r.error, `fetch failed: ${r.error}`);
            check(r.status === 200, `status ${r.status} ${JSON.stringify(r.json)}`);
            check(r.json && Array.isArray(r.json.predictions) && r.json.predictions.length === 5,
                `no top-5: ${JSON.stringify(r.json)}`);
            check(r.headers['x-request-id'], 'X-Request-Id is not exposed to the page');
            check(r.headers['server-timing'], 'Server-Timing is not exposed to the page');
        });

        await runCase('allowed_origin_reads_401', async () => {
            const r = await postFrom(page, `${api}/classify`, b64, null);
            check(!r.error, `fetch failed: ${r.error}`);
            check(r.status === 401, `status ${r.status}`);
            check(/^Bearer/.test(r.headers['www-authenticate'] || ''), `WWW-Authenticate: ${r.headers['www-authenticate']}`);
            check(r.json && r.json.error && r.json.error.code, `no JSON error: ${JSON.stringify(r.json)}`);
            const bad = await postFrom(page, `${api}/classify`, b64, 'wrong-token-0123456789abcdef');
            check(bad.status === 401, `a wrong token: status ${bad.status}`);
        });

        await runCase('allowed_origin_reads_413', async () => {
            const big = jpegOf(photo, MAX_BODY + 50_000).toString('base64');
            const r = await postFrom(page, `${api}/classify`, big, TOKEN);
            check(!r.error, `fetch failed: ${r.error}`);
            check(r.status === 413, `status ${r.status}`);
            check(r.json && r.json.error && r.json.error.code === 'body_too_large', JSON.stringify(r.json));
        });

        await runCase('allowed_origin_reads_503_retry_after', async () => {
            const mid = jpegOf(photo, BUDGET + 50_000).toString('base64');
            const r = await postFrom(page, `${api}/classify`, mid, TOKEN);
            check(!r.error, `fetch failed: ${r.error}`);
            check(r.status === 503, `status ${r.status} ${JSON.stringify(r.json)}`);
            check(Number(r.headers['retry-after']) >= 1, `Retry-After: ${r.headers['retry-after']}`);
            check(r.json && r.json.error && r.json.error.code === 'server_busy', JSON.stringify(r.json));
        });

        await runCase('denied_origin_blocked', async () => {
            await page.goto(denied);
            const r = await postFrom(page, `${api}/classify`, b64, TOKEN);
            check(r.error && /fetch/i.test(r.error), `the browser let it through: ${JSON.stringify(r)}`);
            // A simple GET is sent without a preflight, but its answer stays
            // unreadable to the page.
            const g = await page.evaluate(async (u) => {
                try {
                    await fetch(u);
                    return 'readable';
                } catch (e) {
                    return String(e);
                }
            }, `${api}/healthz`);
            check(/fetch/i.test(g), `a disallowed origin read /healthz: ${g}`);
        });
        await ctx.close();

        await runCase('page_asks_for_token', async () => {
            const c2 = await browser.newContext();
            const p = await c2.newPage();
            await p.goto(`${api}/`);
            await p.waitForSelector('#token-dialog[open]', { timeout: 20_000 });
            await p.fill('#token-input', 'not-the-token-0123456789');
            await p.click('#token-dialog button[type=submit]');
            await p.waitForSelector('#token-error:not([hidden])', { timeout: 20_000 });
            await p.fill('#token-input', TOKEN);
            await p.click('#token-dialog button[type=submit]');
            await p.waitForFunction(() => ['ready', 'random'].includes(document.querySelector('#model')?.dataset.state),
                null, { timeout: 20_000 });
            const stored = await p.evaluate(() => sessionStorage.getItem('imgclassd.token'));
            check(stored === TOKEN, 'the token is not kept in sessionStorage');
            await p.setInputFiles('#file-input', { name: 'cat.jpg', mimeType: 'image/jpeg', buffer: photo });
            await p.waitForFunction(() => ['done', 'error'].includes(document.querySelector('#results .card')?.dataset.state),
                null, { timeout: 60_000 });
            const state = await p.evaluate(() => document.querySelector('#results .card').dataset.state);
            check(state === 'done', `the photo's card ended in '${state}'`);
            check(!(await p.isVisible('#token-dialog')), 'the dialog came back although the token works');
            await c2.close();
        });
    } finally {
        await browser.close().catch(() => {});
        stopServer();
        other.close();
        fs.rmSync(tmp, { recursive: true, force: true });
    }
}

const watchdog = setTimeout(() => {
    fail('timeout', `did not finish within ${TOTAL_TIMEOUT_MS / 1000} s`);
    stopServer();
    process.exit(1);
}, TOTAL_TIMEOUT_MS);

main()
    .catch((e) => fail('harness', (e && e.stack) || e))
    .finally(() => {
        clearTimeout(watchdog);
        stopServer();
        const serverLog = server ? server.log() : '';
        if (failures && serverLog) {
            console.log(`# last server log lines:\n${serverLog.split('\n').slice(-15).map((l) => `#   ${l}`).join('\n')}`);
        }
        process.stdout.write('', () => process.exit(failures ? 1 : 0));
    });
