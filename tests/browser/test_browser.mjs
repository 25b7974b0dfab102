// test_browser.mjs: the web page in a real browser. Starts build/imgclassd
// (IMGCLASSD_BIN) with random ResNet-50 weights on an ephemeral loopback
// port, drives Debian's headless Chromium with playwright-core, and prints
// one line per case: "PASS browser.<case>", "FAIL browser.<case>: why" or
// "SKIP browser.<case>: why" (tests/run.sh counts them). Screenshots go to
// build/browser.png (desktop), build/browser-phone.png (phone width) and
// build/browser-errors.png (error states).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer as startImgclassd, waitReady } from './imgclassd.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const BIN = path.resolve(ROOT, process.env.IMGCLASSD_BIN || 'build/imgclassd');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const OUT = path.join(ROOT, 'build');
const SHARED_IMAGES = path.resolve(ROOT, '..', 'shared', 'images');
const MODEL_INPUT = 224; // resnet50's input side; the page keeps 2x on the shorter side
const TOTAL_TIMEOUT_MS = 300_000;
const RESULT_TIMEOUT_MS = 90_000;

// ---------------------------------------------------------------------------
// Reporting

let failures = 0;
function pass(name) {
    console.log(`PASS browser.${name}`);
}
function fail(name, why) {
    failures++;
    console.log(`FAIL browser.${name}: ${String(why).replace(/\s+/g, ' ').slice(0, 600)}`);
}
function skip(name, why) {
    console.log(`SKIP browser.${name}: ${why}`);
}
class CheckError extends Error {}
function check(cond, why) {
    if (!cond) throw new CheckError(why);
}
// Runs one case; any exception fails it with its message.
async function runCase(name, fn) {
    const t0 = Date.now();
    try {
        const r = await fn();
        if (r && r.skip) skip(name, r.skip);
        else pass(name);
    } catch (e) {
        fail(name, e instanceof CheckError ? e.message : (e && e.stack) || e);
    }
    if (process.env.BROWSER_TEST_VERBOSE) console.log(`#   ${name}: ${Date.now() - t0} ms`);
}

// ---------------------------------------------------------------------------
// The server

let server = null; // a Server from imgclassd.mjs

async function startServer() {
    const r = await startImgclassd(BIN, ['--model', 'random:resnet50',
        '--static-dir', path.join(ROOT, 'static'), '--drain-seconds', '0'], (sv) => { server = sv; });
    return r.port;
}

function stopServer() {
    if (server) server.stop();
}

// ---------------------------------------------------------------------------
// JPEG helpers

function isJpeg(b) {
    return b && b.length > 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;
}

// Width and height from a JPEG's frame header, or null.
function jpegSize(b) {
    let i = 2;
    while (i + 9 < b.length) {
        if (b[i] !== 0xff) return null;
        const m = b[i + 1];
        if (m === 0xff) { i += 1; continue; }
        if (m === 0x01 || (m >= 0xd0 && m <= 0xd8)) { i += 2; continue; }
        if (m === 0xd9 || m === 0xda) return null;
        const len = b.readUInt16BE(i + 2);
        if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
            return { h: b.readUInt16BE(i + 5), w: b.readUInt16BE(i + 7) };
        }
        i += 2 + len;
    }
    return null;
}

// ---------------------------------------------------------------------------
// Test images: a JPEG and a large PNG with transparency, made in the browser
// (from ../shared/images when it is there, else drawn).

async function makeImages(browser, dir) {
    let photo = null;
    let photoName = 'drawn';
    try {
        const names = fs.readdirSync(SHARED_IMAGES).filter((n) => /\.jpe?g$/i.test(n)).sort();
        const pick = (want) => names.find((n) => n.includes(want)) || names[0];
        if (names.length) {
            photo = {
                jpeg: fs.readFileSync(path.join(SHARED_IMAGES, pick('tabby'))),
                other: fs.readFileSync(path.join(SHARED_IMAGES, pick('golden_retriever'))),
            };
            photoName = `${pick('tabby')}, ${pick('golden_retriever')}`;
        }
    } catch (_) { /* no shared images: draw them */ }

    const page = await browser.newPage();
    const made = await page.evaluate(async (src) => {
        const toB64 = async (blob) => {
            const b = new Uint8Array(await blob.arrayBuffer());
            let s = '';
            for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
            return btoa(s);
        };
        const fromB64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
        const draw = (ctx, w, h, hue) => {
            const g = ctx.createLinearGradient(0, 0, w, h);
            g.addColorStop(0, `hsl(${hue} 70% 55%)`);
            g.addColorStop(1, `hsl(${hue + 140} 60% 35%)`);
            ctx.fillStyle = g;
            ctx.fillRect(0, 0, w, h);
            for (let i = 0; i < 12; i++) {
                ctx.fillStyle = `hsl(${(hue + i * 37) % 360} 65% ${40 + (i % 4) * 10}%)`;
                ctx.beginPath();
                ctx.arc(((i * 97) % 10) / 10 * w, ((i * 61) % 10) / 10 * h, (0.05 + (i % 5) * 0.03) * w, 0, 7);
                ctx.fill();
            }
        };
        // JPEG: the shared photo as it is, or a drawn 640x480 one.
        let jpeg;
        if (src) {
            jpeg = src.jpeg;
        } else {
            const c = new OffscreenCanvas(640, 480);
            draw(c.getContext('2d'), 640, 480, 20);
            jpeg = await toB64(await c.convertToBlob({ type: 'image/jpeg', quality: 0.9 }));
        }
        // PNG: 1600x1200 with a transparent border, so the page must both
        // convert it to JPEG and scale it down.
        const c = new OffscreenCanvas(1600, 1200);
        const ctx = c.getContext('2d');
        ctx.clearRect(0, 0, 1600, 1200);
        if (src) {
            const bmp = await createImageBitmap(new Blob([fromB64(src.other)], { type: 'image/jpeg' }));
            ctx.drawImage(bmp, 40, 40, 1520, 1120);
        } else {
            ctx.save();
            ctx.translate(40, 40);
            draw(ctx, 1520, 1120, 200);
            ctx.restore();
        }
        const png = await toB64(await c.convertToBlob({ type: 'image/png' }));
        return { jpeg, png };
    }, photo ? { jpeg: photo.jpeg.toString('base64'), other: photo.other.toString('base64') } : null);
    await page.close();

    const files = {
        jpeg: path.join(dir, 'photo.jpg'),
        png: path.join(dir, 'large-transparent.png'),
    };
    fs.writeFileSync(files.jpeg, Buffer.from(made.jpeg, 'base64'));
    fs.writeFileSync(files.png, Buffer.from(made.png, 'base64'));
    return { files, source: photoName };
}

// ---------------------------------------------------------------------------
// Page helpers

// Watches a page: console errors, page errors, CSP violations, failed
// requests and HTTP errors, and the bodies posted to /classify.
function watch(page) {
    const w = { console: [], failed: [], http: [] };
    page.on('console', (m) => { if (m.type() === 'error') w.console.push(m.text()); });
    page.on('pageerror', (e) => w.console.push(`page error: ${e.message}`));
    page.on('requestfailed', (r) => w.failed.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
    page.on('response', (r) => { if (r.status() >= 400) w.http.push(`${r.status()} ${r.request().method()} ${r.url()}`); });
    return w;
}

// Keeps what the page posts to /classify, since Chromium does not hand
// blob request bodies to the test: wraps window.fetch before the page runs.
async function recordPosts(context) {
    await context.addInitScript(() => {
        const orig = window.fetch;
        window.__classifyPosts = [];
        window.fetch = function (input, init) {
            if (String(input).includes('/classify') && init && init.body instanceof Blob) {
                const h = new Headers(init.headers || {});
                window.__classifyPosts.push({ type: h.get('Content-Type') || '', blob: init.body });
            }
            return orig.apply(this, arguments);
        };
    });
}

async function postedBodies(page) {
    const posts = await page.evaluate(() => Promise.all(window.__classifyPosts.map(async (p) => {
        const b = new Uint8Array(await p.blob.arrayBuffer());
        let s = '';
        for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
        return { type: p.type, b64: btoa(s) };
    })));
    return posts.map((p) => ({ type: p.type, body: Buffer.from(p.b64, 'base64') }));
}

// Clears the results list when it shows.
async function clearResults(page) {
    if (await page.isVisible('#clear')) await page.click('#clear');
}

// Waits until `count` cards have finished (done or error) and returns what
// each shows.
async function waitCards(page, count) {
    await page.waitForFunction((n) => {
        const cards = document.querySelectorAll('#results .card');
        return cards.length >= n &&
            Array.from(cards).every((c) => c.dataset.state === 'done' || c.dataset.state === 'error');
    }, count, { timeout: RESULT_TIMEOUT_MS });
    return page.$$eval('#results .card', (cards) => cards.map((c) => ({
        name: c.querySelector('.card-name')?.textContent || '',
        state: c.dataset.state,
        labels: Array.from(c.querySelectorAll('.pred .pred-label')).map((e) => e.textContent.trim()),
        pcts: Array.from(c.querySelectorAll('.pred .pred-pct')).map((e) => e.textContent.trim()),
        bars: Array.from(c.querySelectorAll('.pred .bar-fill')).map((e) => e.getBoundingClientRect().width),
        timing: c.querySelector('.timing')?.textContent || '',
        error: c.querySelector('.card-error')?.textContent || '',
        alt: c.querySelector('.thumb img')?.alt ?? null,
        thumbLoaded: !!c.querySelector('.thumb img')?.complete && (c.querySelector('.thumb img')?.naturalWidth || 0) > 0,
    })));
}

// The card's five bars, labels, percentages and server time.
function checkTop5(card, what) {
    check(card, `no card for ${what}`);
    check(card.state === 'done', `${what}: card state ${card.state}: ${card.error}`);
    check(card.labels.length === 5, `${what}: ${card.labels.length} bars, want 5`);
    check(card.labels.every((l) => l.length > 0), `${what}: an empty label in ${JSON.stringify(card.labels)}`);
    check(card.pcts.every((p) => /^(<0\.1|\d{1,3}\.\d)%$/.test(p)), `${what}: bad percentages ${JSON.stringify(card.pcts)}`);
    check(card.bars.length === 5 && card.bars.every((w) => w > 0), `${what}: bar widths ${JSON.stringify(card.bars)}`);
    check(/Server time \d/.test(card.timing), `${what}: no server time in "${card.timing}"`);
    check(card.alt && card.alt.length > 0, `${what}: thumbnail without alt text`);
    check(card.thumbLoaded, `${what}: thumbnail did not load`);
}

// Sends a paste or drop event carrying one file, made inside the page.
async function sendFileEvent(page, kind, bytes, name, type) {
    await page.evaluate(({ kind, b64, name, type }) => {
        const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([data], name, { type }));
        if (kind === 'paste') {
            document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
        } else {
            const zone = document.querySelector('#dropzone');
            for (const t of ['dragenter', 'dragover', 'drop']) {
                zone.dispatchEvent(new DragEvent(t, { dataTransfer: dt, bubbles: true, cancelable: true }));
            }
        }
    }, { kind, b64: bytes.toString('base64'), name, type });
}

// ---------------------------------------------------------------------------
// The cases

async function main() {
    if (!fs.existsSync(CHROMIUM)) {
        skip('all', `Chromium is not installed at ${CHROMIUM} (Debian package chromium; make deps installs it)`);
        return;
    }
    if (!fs.existsSync(BIN)) {
        fail('server', `${BIN} does not exist (make build/imgclassd)`);
        return;
    }
    let chromium;
    try {
        ({ chromium } = await import('playwright-core'));
    } catch (e) {
        fail('setup', `playwright-core is not installed (npm ci in tests/browser): ${e.message}`);
        return;
    }
    fs.mkdirSync(OUT, { recursive: true });

    let port;
    try {
        port = await startServer();
        await waitReady(`http://127.0.0.1:${port}`);
    } catch (e) {
        fail('server', e.message);
        return;
    }
    const base = `http://127.0.0.1:${port}`;
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imgclassd-browser-'));

    // Playwright gives every launch a fresh temporary --user-data-dir.
    const browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
            '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync',
            '--disable-dev-shm-usage'],
    });
    try {
        const { files, source } = await makeImages(browser, tmp);
        const jpegBytes = fs.readFileSync(files.jpeg);
        const pngBytes = fs.readFileSync(files.png);
        console.log(`# browser: ${await browser.version()}, server ${base}, images from ${source}`);

        // ---- Desktop: load, headers, model, JPEG + PNG through the file input
        const context = await browser.newContext({ viewport: { width: 1100, height: 900 }, deviceScaleFactor: 1 });
        await recordPosts(context);
        const page = await context.newPage();
        const w = watch(page);
        const assets = {};
        page.on('response', (r) => {
            const p = new URL(r.url()).pathname;
            if (new URL(r.url()).origin === base) assets[p] = r;
        });
        const nav = await page.goto(`${base}/`, { waitUntil: 'load' });

        await runCase('page_loads', async () => {
            check(nav && nav.status() === 200, `GET / answered ${nav && nav.status()}`);
            check(/text\/html/.test(nav.headers()['content-type'] || ''), `GET / content type ${nav.headers()['content-type']}`);
            check(await page.title() !== '', 'the page has no title');
            for (const p of ['/app.js', '/style.css']) check(assets[p] && assets[p].status() === 200, `${p} not loaded`);
        });

        await runCase('security_headers', async () => {
            const h = nav.headers();
            const csp = h['content-security-policy'];
            check(csp, 'GET / has no Content-Security-Policy header');
            const dirs = Object.fromEntries(csp.split(';').map((d) => d.trim()).filter(Boolean)
                .map((d) => { const [k, ...v] = d.split(/\s+/); return [k.toLowerCase(), v]; }));
            check(dirs['default-src'] && dirs['default-src'].join(' ') === "'self'",
                `CSP default-src is not exactly 'self': ${csp}`);
            check(!/unsafe-inline|unsafe-eval|\*/.test(csp), `CSP allows inline code, eval or wildcards: ${csp}`);
            for (const [k, v] of Object.entries(dirs)) {
                for (const src of v) {
                    check(["'self'", "'none'", 'blob:', 'data:'].includes(src),
                        `CSP ${k} allows ${src}, beyond the page's own origin: ${csp}`);
                }
            }
            const scriptSrc = dirs['script-src'] || dirs['default-src'];
            check(!scriptSrc.includes('blob:') && !scriptSrc.includes('data:'), `CSP lets scripts load from blob:/data: ${csp}`);
            for (const [p, r] of [['/', nav], ['/app.js', assets['/app.js']], ['/style.css', assets['/style.css']]]) {
                check(r, `${p} not loaded`);
                check((r.headers()['x-content-type-options'] || '').toLowerCase() === 'nosniff',
                    `${p} lacks X-Content-Type-Options: nosniff`);
            }
            check(/^text\/javascript|^application\/javascript/.test(assets['/app.js'].headers()['content-type'] || ''),
                `app.js content type ${assets['/app.js'].headers()['content-type']}`);
            check(/^text\/css/.test(assets['/style.css'].headers()['content-type'] || ''),
                `style.css content type ${assets['/style.css'].headers()['content-type']}`);
        });

        await runCase('model_info', async () => {
            await page.waitForFunction(() => ['ready', 'random'].includes(document.querySelector('#model')?.dataset.state),
                null, { timeout: 30_000 });
            const chip = await page.textContent('#model');
            check(/resnet50/.test(chip), `the model chip says "${chip.trim()}", want resnet50`);
            check(/random weights/i.test(chip), `the chip does not say the weights are random: "${chip.trim()}"`);
            check(await page.isVisible('#random-warning'), 'no visible random-weights warning');
            const warn = await page.textContent('#random-warning');
            check(/random weights/i.test(warn) && /resnet50/.test(warn), `warning text: "${warn.trim()}"`);
        });

        await runCase('accessibility_basics', async () => {
            const a = await page.evaluate(() => {
                const input = document.querySelector('#file-input');
                return {
                    lang: document.documentElement.lang,
                    inputLabel: input && input.labels.length ? input.labels[0].textContent.trim() : '',
                    accept: input && input.accept,
                    multiple: input && input.multiple,
                    capture: document.querySelector('#camera-input')?.getAttribute('capture'),
                    live: document.querySelector('[aria-live]')?.getAttribute('aria-live'),
                    h1: document.querySelector('h1')?.textContent || '',
                    inlineStyles: document.querySelectorAll('[style]').length,
                    inlineScripts: Array.from(document.scripts).filter((s) => !s.src).length,
                };
            });
            check(a.lang, 'no lang on <html>');
            check(a.inputLabel, 'the file input has no label');
            check(a.accept === 'image/*' && a.multiple, `file input accept=${a.accept} multiple=${a.multiple}`);
            check(a.capture, 'no camera input with capture');
            check(a.live === 'polite', 'no aria-live region for results');
            check(a.h1, 'no h1');
            check(a.inlineScripts === 0, `${a.inlineScripts} inline scripts`);
            // The keyboard reaches the file picker and its focus is visible.
            await page.focus('body');
            let id = '';
            for (let i = 0; i < 10 && id !== 'file-input'; i++) {
                await page.keyboard.press('Tab');
                id = await page.evaluate(() => document.activeElement?.id || '');
            }
            check(id === 'file-input', 'Tab does not reach the file picker');
            const outline = await page.$eval('label[for="file-input"]', (l) => getComputedStyle(l).outlineStyle);
            check(outline && outline !== 'none', 'the focused file picker shows no focus outline');
        });

        await page.setInputFiles('#file-input', [files.jpeg, files.png]);
        let cards = [];
        await runCase('upload_finishes', async () => {
            cards = await waitCards(page, 2);
            check(cards.length === 2, `${cards.length} cards, want 2`);
        });
        const byName = (n) => cards.find((c) => c.name === n);
        await runCase('jpeg_top5', async () => checkTop5(byName('photo.jpg'), 'JPEG'));
        await runCase('png_top5', async () => checkTop5(byName('large-transparent.png'), 'PNG'));

        await runCase('uploads_are_small_jpegs', async () => {
            const posts = await postedBodies(page);
            check(posts.length === 2, `${posts.length} POSTs to /classify, want 2`);
            for (const p of posts) {
                check(p.body && isJpeg(p.body), 'a POST body is not a JPEG');
                check(/^image\/jpeg/.test(p.type), `POST content type ${p.type}`);
            }
            const same = posts.find((p) => p.body.equals(jpegBytes));
            check(same, 'the small JPEG was not sent unchanged');
            const conv = posts.find((p) => !p.body.equals(jpegBytes));
            const d = jpegSize(conv.body);
            check(d, 'the converted PNG has no JPEG frame header');
            check(Math.min(d.w, d.h) === 2 * MODEL_INPUT,
                `the 1600x1200 PNG went up as ${d.w}x${d.h}, want shorter side ${2 * MODEL_INPUT}`);
            check(conv.body.length < pngBytes.length / 4,
                `the converted upload is ${conv.body.length} bytes, the PNG ${pngBytes.length}`);
        });

        await runCase('no_console_errors', async () => {
            check(w.console.length === 0, w.console.join(' | '));
        });
        await runCase('no_failed_requests', async () => {
            check(w.failed.length === 0, w.failed.join(' | '));
            check(w.http.length === 0, `HTTP errors: ${w.http.join(' | ')}`);
            const external = await page.evaluate(() => performance.getEntriesByType('resource')
                .map((e) => e.name).filter((u) => !u.startsWith(location.origin) && !u.startsWith('blob:')));
            check(external.length === 0, `requests to other origins: ${external.join(' ')}`);
        });

        await page.evaluate(() => document.activeElement && document.activeElement.blur());
        await page.screenshot({ path: path.join(OUT, 'browser.png'), fullPage: true });

        // ---- Paste and drop
        await runCase('paste', async () => {
            await sendFileEvent(page, 'paste', jpegBytes, 'image.png', 'image/jpeg');
            const c = await waitCards(page, 3);
            check(c.length === 3, `${c.length} cards after a paste, want 3`);
            checkTop5(c[0], 'pasted image');
        });
        await runCase('drop', async () => {
            await sendFileEvent(page, 'drop', pngBytes, 'dropped.png', 'image/png');
            const c = await waitCards(page, 4);
            check(c.length === 4, `${c.length} cards after a drop, want 4`);
            checkTop5(c.find((x) => x.name === 'dropped.png'), 'dropped PNG');
        });
        await runCase('not_an_image', async () => {
            await sendFileEvent(page, 'drop', Buffer.from('just some text, not a photo\n'), 'notes.txt', 'text/plain');
            const c = await waitCards(page, 5);
            const card = c.find((x) => x.name === 'notes.txt');
            check(card && card.state === 'error' && /not a photo/i.test(card.error),
                `a text file shows "${card && card.error}"`);
        });
        await runCase('clear_all', async () => {
            await page.click('#clear');
            check(await page.$$eval('#results .card', (c) => c.length) === 0, 'cards left after Clear all');
            check(!(await page.isVisible('#results-section')), 'the results section stays visible');
        });
        await runCase('no_console_errors_after_paste_drop', async () => {
            check(w.console.length === 0, w.console.join(' | '));
            check(w.failed.length === 0 && w.http.length === 0, [...w.failed, ...w.http].join(' | '));
        });
        await context.close();

        // ---- Phone width
        await runCase('phone_width', async () => {
            const ctx = await browser.newContext({
                viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
            });
            const p = await ctx.newPage();
            const pw = watch(p);
            await p.goto(`${base}/`);
            await p.waitForFunction(() => document.querySelector('#model')?.dataset.state === 'random', null, { timeout: 30_000 });
            check(await p.isVisible('label[for="camera-input"]'), 'no camera button at phone width');
            await p.setInputFiles('#file-input', [files.jpeg, files.png]);
            const c = await waitCards(p, 2);
            for (const card of c) checkTop5(card, `${card.name} on a phone`);
            const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
            check(overflow <= 0, `the page is ${overflow} px wider than a 390 px screen`);
            // A tall viewport rather than fullPage: Chromium's full-page capture
            // drops the touch emulation, and with it the phone layout.
            const height = await p.evaluate(() => document.documentElement.scrollHeight);
            await p.setViewportSize({ width: 390, height: Math.min(height, 4000) });
            await p.screenshot({ path: path.join(OUT, 'browser-phone.png') });
            check(pw.console.length === 0, pw.console.join(' | '));
            await ctx.close();
        });

        // ---- Errors, served by intercepting /classify
        const errCtx = await browser.newContext({ viewport: { width: 1100, height: 900 } });
        const ep = await errCtx.newPage();
        await ep.goto(`${base}/`);
        await ep.waitForFunction(() => document.querySelector('#model')?.dataset.state === 'random', null, { timeout: 30_000 });
        const errorJson = (code, message) => JSON.stringify({ error: { code, message } });
        let shown = 0; // cards on the error page; each case adds one at the top

        await runCase('busy_503_retried', async () => {
            let calls = 0;
            await ep.route('**/classify*', async (route) => {
                calls++;
                if (calls === 1) {
                    await route.fulfill({ status: 503, headers: { 'Retry-After': '1' }, contentType: 'application/json',
                        body: errorJson('queue_full', 'the queue is full') });
                } else {
                    await route.continue();
                }
            });
            await clearResults(ep);
            await ep.setInputFiles('#file-input', [files.jpeg]);
            await ep.waitForFunction(() => /busy/i.test(document.querySelector('#results .card-status')?.textContent || ''),
                null, { timeout: 10_000 });
            const c = await waitCards(ep, ++shown);
            await ep.unroute('**/classify*');
            check(calls === 2, `${calls} calls to /classify, want 2 (one 503, one retry)`);
            checkTop5(c[0], 'after a 503');
        });

        for (const [name, status, code, msg, want] of [
            ['error_413', 413, 'too_large', 'image is 20000x15000 pixels', /too large/i],
            ['error_415', 415, 'unsupported_media_type', 'the body looks like PNG', /only takes JPEG/i],
            ['error_400', 400, 'invalid_image', 'corrupt JPEG data', /could not read this image/i],
        ]) {
            await runCase(name, async () => {
                await ep.route('**/classify*', (route) => route.fulfill({ status, contentType: 'application/json',
                    body: errorJson(code, msg) }));
                await ep.setInputFiles('#file-input', [files.jpeg]);
                const c = await waitCards(ep, ++shown); // the newest card is first
                await ep.unroute('**/classify*');
                check(c[0].state === 'error', `state ${c[0].state}`);
                check(want.test(c[0].error), `the card says "${c[0].error}"`);
                check(c[0].error.includes(msg), `the server's message is not shown: "${c[0].error}"`);
            });
        }

        await runCase('network_failure_then_retry', async () => {
            await ep.route('**/classify*', (route) => route.abort('connectionrefused'));
            await ep.setInputFiles('#file-input', [files.png]);
            let c = await waitCards(ep, ++shown);
            await ep.unroute('**/classify*');
            check(c[0].state === 'error' && /could not reach the server/i.test(c[0].error), `the card says "${c[0].error}"`);
            await ep.screenshot({ path: path.join(OUT, 'browser-errors.png'), fullPage: true });
            await ep.click('#results .card-error button');
            await ep.waitForFunction(() => document.querySelector('#results .card')?.dataset.state !== 'error',
                null, { timeout: 10_000 });
            c = await waitCards(ep, shown);
            checkTop5(c[0], 'after Try again');
        });
        await errCtx.close();
    } finally {
        await browser.close().catch(() => {});
        stopServer();
        fs.rmSync(tmp, { recursive: true, force: true });
    }
}

const watchdog = setTimeout(() => {
    fail('timeout', `the browser test did not finish within ${TOTAL_TIMEOUT_MS / 1000} s`);
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
        // Exit now: a stray pipe (a server's child, say) must not keep the
        // test alive once it is done.
        process.stdout.write('', () => process.exit(failures ? 1 : 0));
    });
