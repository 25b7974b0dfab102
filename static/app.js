/* app.js: the imgclassd web page. Photos come in by drop, file picker,
 * camera or paste; each is converted to JPEG and scaled down in the browser
 * when needed, posted to /classify, and shown as a card with its top-5
 * classes. No dependencies, no inline code: the page runs under a CSP of
 * "default-src 'self'; img-src 'self' blob:". */
'use strict';

(() => {
    const TOPK = 5;
    const UPLOADS_AT_ONCE = 3;     /* the server batches concurrent requests */
    const MAX_BUSY_RETRIES = 5;    /* 503 answers retried after Retry-After */
    const JPEG_QUALITY = 0.9;
    const PASS_MAX_BYTES = 2 << 20; /* JPEGs up to this size and ... */
    const PASS_MAX_FACTOR = 4;      /* ... shorter side <= 4x the input are sent as they are */
    const HEAD_BYTES = 256 << 10;   /* enough of a file to find its JPEG frame header */

    const model = {
        ready: null,      /* Promise resolved once /v1/models answered (or gave up) */
        names: [],        /* every served model (/v1/models); a picker when more than one */
        input: 224,       /* model input side in pixels */
        name: '',
        random: false,
        maxBodyBytes: 0,
        maxPixels: 0,
    };

    const $ = (sel) => document.querySelector(sel);
    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

    /* Creates an element with a class and text. */
    function el(tag, cls, text) {
        const e = document.createElement(tag);
        if (cls) e.className = cls;
        if (text !== undefined && text !== null) e.textContent = text;
        return e;
    }

    function formatBytes(n) {
        if (n < 1024) return `${n} B`;
        if (n < 1024 * 1024) return `${Math.round(n / 1024)} KB`;
        return `${(n / (1024 * 1024)).toFixed(1).replace(/\.0$/, '')} MB`;
    }

    function formatMs(ms) {
        if (!Number.isFinite(ms)) return '–';
        return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
    }

    function formatPercent(score) {
        const p = score * 100;
        if (p > 0 && p < 0.1) return '<0.1%';
        return `${p.toFixed(1)}%`;
    }

    /* Seconds to wait from a Retry-After header (seconds or an HTTP date),
     * kept between 1 and 60. */
    function retryAfterSeconds(resp) {
        const h = resp.headers.get('Retry-After');
        let s = h === null ? NaN : Number(h);
        if (!Number.isFinite(s) && h) s = (Date.parse(h) - Date.now()) / 1000;
        if (!Number.isFinite(s)) s = 2;
        return Math.min(60, Math.max(1, Math.ceil(s)));
    }

    /* ------------------------------------------------------------------ */
    /* Access token                                                       */
    /* ------------------------------------------------------------------ */

    /* A server started with --auth-token-file answers 401 without a valid
     * token. The page then asks for one, keeps it in sessionStorage (this
     * tab only, gone when it closes; never localStorage or a cookie) and
     * sends it as Authorization: Bearer from then on. */
    const TOKEN_KEY = 'imgclassd.token';
    let tokenPrompt = null; /* one dialog for every request that got 401 */

    function storedToken() {
        try {
            return sessionStorage.getItem(TOKEN_KEY) || '';
        } catch (_) {
            return ''; /* storage disabled: ask again each time */
        }
    }

    /* Shows the dialog; resolves to the token typed, or '' when cancelled. */
    function askToken(rejected) {
        if (tokenPrompt) return tokenPrompt;
        const dialog = $('#token-dialog');
        const input = $('#token-input');
        $('#token-error').hidden = !rejected;
        input.value = '';
        tokenPrompt = new Promise((resolve) => {
            const done = (token) => {
                dialog.removeEventListener('close', onClose);
                tokenPrompt = null;
                if (token) {
                    try {
                        sessionStorage.setItem(TOKEN_KEY, token);
                    } catch (_) { /* kept for this request only */ }
                }
                resolve(token);
            };
            const onClose = () => done(dialog.returnValue === 'ok' ? input.value.trim() : '');
            dialog.addEventListener('close', onClose);
            dialog.returnValue = ''; /* Escape leaves the previous value */
            dialog.showModal();
            input.focus();
        });
        return tokenPrompt;
    }

    /* fetch() with the token, asking for one on 401 and retrying. A 401 that
     * the user does not answer with a token is returned as it is. */
    async function apiFetch(url, opts) {
        for (;;) {
            const token = storedToken();
            const headers = Object.assign({}, opts.headers);
            if (token) headers.Authorization = `Bearer ${token}`;
            const resp = await fetch(url, Object.assign({}, opts, { headers }));
            if (resp.status !== 401) return resp;
            /* Another request may have stored a new token meanwhile. */
            if (storedToken() && storedToken() !== token) continue;
            if (token) {
                try {
                    sessionStorage.removeItem(TOKEN_KEY);
                } catch (_) { /* nothing stored */ }
            }
            if (!(await askToken(Boolean(token)))) return resp;
        }
    }

    /* ------------------------------------------------------------------ */
    /* Model information                                                  */
    /* ------------------------------------------------------------------ */

    async function loadModel() {
        const chip = $('#model');
        const text = $('#model-text');
        for (let attempt = 0; attempt < 60; attempt++) {
            let resp;
            try {
                resp = await apiFetch('/v1/models', { headers: { Accept: 'application/json' } });
            } catch (_) {
                chip.dataset.state = 'error';
                text.textContent = 'Cannot reach the server';
                await sleep(3000);
                continue;
            }
            if (resp.status === 503) {
                chip.dataset.state = 'loading';
                text.textContent = 'The model is loading…';
                await sleep(retryAfterSeconds(resp) * 1000);
                continue;
            }
            let body = null;
            try {
                body = await resp.json();
            } catch (_) { /* handled below */ }
            /* /v1/models lists the names (KServe v1); /v1/models/{name}
             * carries the details. */
            model.names = body && Array.isArray(body.models)
                ? body.models.filter((n) => typeof n === 'string') : [];
            if (!resp.ok || !model.names.length || !(await pickModel(model.names[0]))) {
                chip.dataset.state = 'error';
                text.textContent = 'Model information unavailable';
                return;
            }
            if (model.names.length > 1) showPicker();
            return;
        }
    }

    /* Loads /v1/models/{name} and shows it; false when unavailable. */
    async function pickModel(name) {
        let m = null;
        try {
            const d = await apiFetch(`/v1/models/${encodeURIComponent(name)}`,
                { headers: { Accept: 'application/json' } });
            if (d.ok) m = await d.json();
        } catch (_) { /* handled by the caller */ }
        if (!m) return false;
        showModel(m);
        return true;
    }

    /* Several models: a picker beside the chip; the next photos go to the
     * one chosen (/classify?model=NAME). */
    function showPicker() {
        const select = document.createElement('select');
        select.id = 'model-picker';
        select.setAttribute('aria-label', 'Model');
        for (const n of model.names) {
            const o = document.createElement('option');
            o.value = n;
            o.textContent = n;
            select.append(o);
        }
        select.addEventListener('change', () => { pickModel(select.value); });
        $('#model').after(select);
    }

    function showModel(m) {
        const chip = $('#model');
        const text = $('#model-text');
        model.name = String(m.name || m.architecture || 'model');
        model.random = m.random === true;
        if (Array.isArray(m.input_size) && m.input_size.length >= 3) {
            const side = Math.max(Number(m.input_size[1]) || 0, Number(m.input_size[2]) || 0);
            if (side >= 16 && side <= 4096) model.input = side;
        }
        if (m.limits) {
            model.maxBodyBytes = Number(m.limits.max_body_bytes) || 0;
            model.maxPixels = Number(m.limits.max_pixels) || 0;
        }
        const parts = [model.name];
        if (model.random) {
            parts.push('random weights');
        } else if (Number(m.parameters) > 0) {
            parts.push(`${(Number(m.parameters) / 1e6).toFixed(1)}M parameters`);
        }
        if (Number(m.classes) > 0) parts.push(`${Number(m.classes).toLocaleString('en')} classes`);
        text.textContent = parts.join(' · ');
        chip.dataset.state = model.random ? 'random' : 'ready';
        chip.title = m.weights ? `Weights: ${m.weights}` : '';
        if (model.random) {
            $('#random-text').textContent =
                `This server runs ${model.name} with random weights` +
                (m.weights ? ` (${m.weights})` : '') +
                '. The model has not been trained, so its guesses have nothing to do with ' +
                'your photos. It is meant for testing the service, not for real answers.';
            $('#random-warning').hidden = false;
        }
    }

    /* ------------------------------------------------------------------ */
    /* Reading and preparing photos                                       */
    /* ------------------------------------------------------------------ */

    function ascii(b, from, to) {
        let s = '';
        for (let i = from; i < to && i < b.length; i++) s += String.fromCharCode(b[i]);
        return s;
    }

    /* The format a file's first bytes say it is. */
    function sniffFormat(b, type) {
        if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'JPEG';
        if (b[0] === 0x89 && ascii(b, 1, 4) === 'PNG') return 'PNG';
        if (ascii(b, 0, 3) === 'GIF') return 'GIF';
        if (ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 12) === 'WEBP') return 'WebP';
        if (ascii(b, 4, 8) === 'ftyp') {
            const brand = ascii(b, 8, 12);
            if (/^avi[fs]$/.test(brand)) return 'AVIF';
            if (/^(heic|heix|hevc|hevx|heim|heis|mif1|msf1)$/.test(brand)) return 'HEIC';
        }
        if (ascii(b, 0, 2) === 'BM') return 'BMP';
        if (ascii(b, 0, 4) === 'II*\0' || ascii(b, 0, 4) === 'MM\0*') return 'TIFF';
        if (/^image\//.test(type || '')) return type.slice(6).toUpperCase();
        return '';
    }

    /* Width and height from a JPEG's frame header, or null. */
    function jpegSize(b) {
        let i = 2;
        while (i + 9 < b.length) {
            if (b[i] !== 0xff) return null;
            const m = b[i + 1];
            if (m === 0xff) { i += 1; continue; }
            if (m === 0x01 || (m >= 0xd0 && m <= 0xd8)) { i += 2; continue; }
            if (m === 0xd9 || m === 0xda) return null;
            const len = (b[i + 2] << 8) | b[i + 3];
            if (len < 2) return null;
            if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
                return { h: (b[i + 5] << 8) | b[i + 6], w: (b[i + 7] << 8) | b[i + 8] };
            }
            i += 2 + len;
        }
        return null;
    }

    class UnreadableImage extends Error {}

    /* Decodes a file the browser can read; returns {src, width, height, done}
     * where done() releases it. EXIF orientation is applied. */
    async function decodeImage(file) {
        if (typeof createImageBitmap === 'function') {
            try {
                const bmp = await createImageBitmap(file, { imageOrientation: 'from-image' });
                return { src: bmp, width: bmp.width, height: bmp.height, done: () => bmp.close() };
            } catch (_) { /* try an <img> below: Safari decodes HEIC there */ }
        }
        const url = URL.createObjectURL(file);
        const img = new Image();
        img.decoding = 'async';
        img.src = url;
        try {
            await img.decode();
        } catch (_) {
            URL.revokeObjectURL(url);
            throw new UnreadableImage('undecodable');
        }
        return {
            src: img, width: img.naturalWidth, height: img.naturalHeight,
            done: () => URL.revokeObjectURL(url),
        };
    }

    function newCanvas(w, h) {
        const c = document.createElement('canvas');
        c.width = w;
        c.height = h;
        return c;
    }

    function canvasToJpeg(canvas) {
        return new Promise((resolve, reject) => {
            canvas.toBlob((b) => (b ? resolve(b) : reject(new UnreadableImage('encode'))),
                'image/jpeg', JPEG_QUALITY);
        });
    }

    /* Draws src (sw x sh) at tw x th on a white background, halving in
     * steps first so a big reduction stays sharp and free of aliasing. */
    function drawScaled(src, sw, sh, tw, th) {
        let cur = src, cw = sw, ch = sh;
        const temps = [];
        while (cw >= 2 * tw && ch >= 2 * th) {
            const nw = Math.max(tw, Math.round(cw / 2)), nh = Math.max(th, Math.round(ch / 2));
            const c = newCanvas(nw, nh);
            const cx = c.getContext('2d');
            cx.imageSmoothingEnabled = true;
            cx.imageSmoothingQuality = 'high';
            cx.drawImage(cur, 0, 0, cw, ch, 0, 0, nw, nh);
            temps.push(c);
            cur = c; cw = nw; ch = nh;
        }
        const out = newCanvas(tw, th);
        const ctx = out.getContext('2d');
        ctx.fillStyle = '#ffffff'; /* transparent pixels become white, not black */
        ctx.fillRect(0, 0, tw, th);
        ctx.imageSmoothingEnabled = true;
        ctx.imageSmoothingQuality = 'high';
        ctx.drawImage(cur, 0, 0, cw, ch, 0, 0, tw, th);
        for (const c of temps) c.width = c.height = 0;
        return out;
    }

    /* Turns a file into the JPEG to upload: a small enough JPEG goes as it
     * is; anything else is decoded, scaled so its shorter side is 2x the
     * model's input (never enlarged) and encoded as JPEG. Returns
     * {blob, format, width, height, sentWidth, sentHeight, converted, scaled}. */
    async function preparePhoto(file) {
        const head = new Uint8Array(await file.slice(0, HEAD_BYTES).arrayBuffer());
        const format = sniffFormat(head, file.type);
        const keepShort = 2 * model.input;
        if (format === 'JPEG') {
            const d = jpegSize(head);
            if (d && d.w > 0 && d.h > 0 && file.size <= PASS_MAX_BYTES &&
                Math.min(d.w, d.h) <= PASS_MAX_FACTOR * model.input) {
                return { blob: file, format, width: d.w, height: d.h, sentWidth: d.w,
                    sentHeight: d.h, converted: false, scaled: false };
            }
        }
        if (format === 'SVG' || (file.type && !/^image\//.test(file.type) && !format)) {
            throw new UnreadableImage('not a photo');
        }
        const img = await decodeImage(file);
        try {
            const w = img.width, h = img.height;
            if (!w || !h) throw new UnreadableImage('empty');
            const scale = Math.min(1, keepShort / Math.min(w, h));
            const tw = Math.max(1, Math.round(w * scale)), th = Math.max(1, Math.round(h * scale));
            const canvas = drawScaled(img.src, w, h, tw, th);
            const blob = await canvasToJpeg(canvas);
            canvas.width = canvas.height = 0;
            return { blob, format: format || 'image', width: w, height: h, sentWidth: tw,
                sentHeight: th, converted: format !== 'JPEG', scaled: scale < 1 };
        } finally {
            img.done();
        }
    }

    /* ------------------------------------------------------------------ */
    /* Work queues                                                        */
    /* ------------------------------------------------------------------ */

    /* Runs at most `limit` tasks at once, in order of arrival. */
    function makeQueue(limit) {
        const waiting = [];
        let running = 0;
        const pump = () => {
            while (running < limit && waiting.length) {
                const { task, resolve, reject } = waiting.shift();
                running++;
                Promise.resolve().then(task).then(resolve, reject).finally(() => {
                    running--;
                    pump();
                });
            }
        };
        return (task) => new Promise((resolve, reject) => {
            waiting.push({ task, resolve, reject });
            pump();
        });
    }

    const decodeQueue = makeQueue(1); /* decoding a big photo takes a lot of memory */
    const uploadQueue = makeQueue(UPLOADS_AT_ONCE);

    /* ------------------------------------------------------------------ */
    /* Result cards                                                       */
    /* ------------------------------------------------------------------ */

    let cardSeq = 0;
    const cards = new Set();

    function announce(msg) {
        const a = $('#announcer');
        a.textContent = '';
        /* a fresh text node after a tick makes screen readers read it again */
        setTimeout(() => { a.textContent = msg; }, 50);
    }

    class Card {
        constructor(file) {
            this.id = `photo-${++cardSeq}`;
            this.name = file.name || 'Pasted image';
            this.file = file;
            this.photo = null;
            this.url = null;
            this.gone = false;
            this.abort = null;

            const li = el('li', 'card-item');
            const art = el('article', 'card');
            art.dataset.state = 'waiting';
            art.setAttribute('aria-labelledby', `${this.id}-name`);
            art.setAttribute('aria-busy', 'true');
            li.appendChild(art);
            this.art = art;

            this.thumbBox = el('div', 'thumb');
            this.thumbBox.appendChild(el('span', 'thumb-placeholder'));
            art.appendChild(this.thumbBox);

            const head = el('div', 'card-head');
            const h3 = el('h3', 'card-name', this.name);
            h3.id = `${this.id}-name`;
            h3.title = this.name;
            this.meta = el('p', 'card-meta', formatBytes(file.size));
            head.append(h3, this.meta);
            art.appendChild(head);

            this.body = el('div', 'card-body');
            art.appendChild(this.body);
            this.li = li;
            this.setStatus('Waiting…');
        }

        setState(state) {
            this.art.dataset.state = state;
            this.art.setAttribute('aria-busy', state === 'waiting' || state === 'working' ? 'true' : 'false');
        }

        /* A spinner line plus skeleton bars while the photo is on its way. */
        setStatus(text, state = 'working') {
            if (this.gone) return;
            this.setState(state);
            this.body.replaceChildren();
            const st = el('p', 'card-status');
            st.append(el('span', 'spinner'), el('span', 'card-status-text', text));
            this.statusText = st.lastChild;
            this.body.appendChild(st);
            const sk = el('div', 'skeleton');
            sk.setAttribute('aria-hidden', 'true');
            for (let i = 0; i < TOPK; i++) sk.appendChild(el('span', 'skeleton-row'));
            this.body.appendChild(sk);
        }

        setThumb(blob) {
            if (this.gone) return;
            this.url = URL.createObjectURL(blob);
            const img = el('img');
            img.alt = `Your photo ${this.name}`;
            img.decoding = 'async';
            img.src = this.url;
            img.addEventListener('error', () => { img.replaceWith(el('span', 'thumb-placeholder')); });
            this.thumbBox.replaceChildren(img);
        }

        setMeta(p) {
            const parts = [];
            if (p.scaled) {
                parts.push(`${p.width}×${p.height} → ${p.sentWidth}×${p.sentHeight}`);
            } else {
                parts.push(`${p.sentWidth}×${p.sentHeight}`);
            }
            if (p.converted) parts.push(`${p.format} → JPEG`);
            parts.push(`${formatBytes(p.blob.size)} sent`);
            this.meta.textContent = parts.join(' · ');
        }

        showResult(body) {
            if (this.gone) return;
            this.setState('done');
            this.body.replaceChildren();
            const list = el('ol', 'preds');
            list.setAttribute('aria-label', `Top ${body.predictions.length} classes`);
            body.predictions.forEach((p, i) => {
                const score = Math.min(1, Math.max(0, Number(p.score) || 0));
                const item = el('li', i === 0 ? 'pred pred-top' : 'pred');
                const row = el('div', 'pred-row');
                const label = el('span', 'pred-label', p.label || `class ${p.index}`);
                label.title = `class ${p.index}`;
                row.append(label, el('span', 'pred-pct', formatPercent(score)));
                const bar = el('div', 'bar');
                bar.setAttribute('aria-hidden', 'true');
                const fill = el('span', 'bar-fill');
                /* CSSOM, not a style attribute: allowed under a strict CSP */
                fill.style.width = `${(score * 100).toFixed(2)}%`;
                bar.appendChild(fill);
                item.append(row, bar);
                list.appendChild(item);
            });
            this.body.appendChild(list);

            const t = body.timing || {};
            const q = Number(t.queue_ms), d = Number(t.decode_ms), inf = Number(t.infer_ms);
            const total = [q, d, inf].filter(Number.isFinite).reduce((a, b) => a + b, 0);
            const timing = el('p', 'timing');
            timing.append(el('span', 'timing-total', `Server time ${formatMs(total)}`));
            const det = [];
            if (Number.isFinite(d)) det.push(`decode ${formatMs(d)}`);
            if (Number.isFinite(q)) det.push(`queue ${formatMs(q)}`);
            if (Number.isFinite(inf)) det.push(`inference ${formatMs(inf)}`);
            if (Number(t.batch_size) > 0) det.push(`batch of ${t.batch_size}`);
            if (det.length) timing.append(el('span', 'timing-detail', det.join(' · ')));
            this.body.appendChild(timing);

            const top = body.predictions[0];
            announce(top
                ? `${this.name}: most likely ${top.label}, ${formatPercent(top.score)}.` +
                  (model.random ? ' The model has random weights.' : '')
                : `${this.name}: no classes returned.`);
        }

        /* A plain-words error, the server's own message under it, and a
         * "Try again" button when trying again can help. */
        showError(title, detail, retry) {
            if (this.gone) return;
            this.setState('error');
            this.body.replaceChildren();
            const box = el('div', 'card-error');
            box.setAttribute('role', 'alert');
            box.appendChild(el('p', 'error-title', title));
            if (detail) box.appendChild(el('p', 'error-detail', detail));
            if (retry) {
                const b = el('button', 'button button-small', 'Try again');
                b.type = 'button';
                b.setAttribute('aria-label', `Try ${this.name} again`);
                b.addEventListener('click', () => {
                    this.setStatus('Waiting…');
                    retry();
                });
                box.appendChild(b);
            }
            this.body.appendChild(box);
        }

        remove() {
            this.gone = true;
            if (this.abort) this.abort.abort();
            if (this.url) URL.revokeObjectURL(this.url);
            this.li.remove();
        }
    }

    /* The words shown for an HTTP error status. */
    function explainStatus(status, code) {
        switch (status) {
        case 400:
            return code === 'invalid_image' || code === 'empty_body'
                ? 'The server could not read this image. The file may be damaged.'
                : 'The server did not accept this request.';
        case 413: {
            const lim = [];
            if (model.maxBodyBytes) lim.push(formatBytes(model.maxBodyBytes));
            if (model.maxPixels) lim.push(`${Math.round(model.maxPixels / 1e6)} megapixels`);
            return 'This photo is too large for the server' +
                (lim.length ? ` (its limit is ${lim.join(' and ')}).` : '.');
        }
        case 401:
            return 'This server needs an access token, and none was given.';
        case 415:
            return 'The server only takes JPEG images, and this file could not be turned into one.';
        case 503:
            return 'The server is too busy right now. Please try again in a moment.';
        case 504:
            return 'The server was too busy to get to this photo in time. Please try again.';
        default:
            return status >= 500
                ? `Something went wrong on the server (error ${status}).`
                : `The server refused this photo (error ${status}).`;
        }
    }

    /* Posts the prepared JPEG; retries 503s after the delay the server asks
     * for, up to MAX_BUSY_RETRIES times. */
    async function classify(card) {
        for (let busy = 0; ; busy++) {
            if (card.gone) return;
            card.setStatus('Classifying…');
            card.abort = new AbortController();
            let resp;
            try {
                const pick = model.names.length > 1
                    ? `&model=${encodeURIComponent(model.name)}` : '';
                resp = await apiFetch(`/classify?topk=${TOPK}${pick}`, {
                    method: 'POST',
                    headers: { 'Content-Type': 'image/jpeg', Accept: 'application/json' },
                    body: card.photo.blob,
                    signal: card.abort.signal,
                });
            } catch (e) {
                if (card.gone) return;
                card.showError('Could not reach the server. Check your connection and try again.',
                    '', () => send(card));
                announce(`${card.name}: could not reach the server.`);
                return;
            }
            let body = null;
            try {
                body = await resp.json();
            } catch (_) { /* not JSON: explained by the status below */ }
            if (card.gone) return;
            if (resp.ok && body && Array.isArray(body.predictions)) {
                card.showResult(body);
                return;
            }
            if (resp.status === 503 && busy < MAX_BUSY_RETRIES) {
                let s = retryAfterSeconds(resp);
                while (s > 0 && !card.gone) {
                    card.setStatus(`The server is busy. Trying again in ${s} s…`, 'working');
                    await sleep(1000);
                    s--;
                }
                continue;
            }
            const err = body && body.error ? body.error : {};
            const detail = err.message ? `Server said: ${err.message}` : '';
            const retryable = resp.status >= 500 || resp.status === 408 || resp.status === 429 ||
                resp.status === 401; /* retrying asks for a token again */
            card.showError(explainStatus(resp.status, err.code), detail,
                retryable ? () => send(card) : null);
            announce(`${card.name}: ${explainStatus(resp.status, err.code)}`);
            return;
        }
    }

    async function handlePhoto(card) {
        await Promise.race([model.ready, sleep(4000)]);
        try {
            card.setStatus('Preparing…');
            card.photo = await decodeQueue(() => (card.gone ? null : preparePhoto(card.file)));
        } catch (e) {
            const heic = /\.(heic|heif)$/i.test(card.name) || /hei[cf]/i.test(card.file.type);
            card.showError(heic
                ? 'This browser cannot open HEIC photos. Try Safari, or save the photo as JPEG first.'
                : 'This file is not a photo this browser can open.', '', null);
            announce(`${card.name}: this file could not be opened.`);
            return;
        }
        if (!card.photo || card.gone) return;
        card.setThumb(card.photo.blob);
        card.setMeta(card.photo);
        card.file = null; /* the prepared blob is all we keep */
        await send(card);
    }

    /* Queues the card's upload; a bug on this page shows on the card
     * instead of disappearing into the console. */
    function send(card) {
        return uploadQueue(() => classify(card)).catch((e) => {
            card.showError('Something went wrong on this page. Please try again.', String(e && e.message || e),
                () => send(card));
        });
    }

    /* ------------------------------------------------------------------ */
    /* Input: picker, camera, drop, paste                                 */
    /* ------------------------------------------------------------------ */

    function addFiles(list) {
        const files = Array.from(list || []);
        if (!files.length) return;
        const section = $('#results-section');
        const results = $('#results');
        section.hidden = false;
        const first = results.firstChild;
        const added = files.map((f) => {
            const card = new Card(f);
            cards.add(card);
            results.insertBefore(card.li, first);
            return card;
        });
        announce(files.length === 1 ? `Classifying ${added[0].name}.` : `Classifying ${files.length} photos.`);
        const reduce = window.matchMedia('(prefers-reduced-motion: reduce)').matches;
        added[0].li.scrollIntoView({ block: 'nearest', behavior: reduce ? 'auto' : 'smooth' });
        for (const c of added) handlePhoto(c);
    }

    function clearAll() {
        for (const c of cards) c.remove();
        cards.clear();
        $('#results-section').hidden = true;
        announce('Results cleared.');
        $('#file-input').focus();
    }

    function filesFromTransfer(dt) {
        if (!dt) return [];
        if (dt.files && dt.files.length) return Array.from(dt.files);
        const out = [];
        for (const item of Array.from(dt.items || [])) {
            if (item.kind === 'file') {
                const f = item.getAsFile();
                if (f) out.push(f);
            }
        }
        return out;
    }

    function setupInput() {
        for (const id of ['#file-input', '#camera-input']) {
            const input = $(id);
            input.addEventListener('change', () => {
                addFiles(input.files);
                input.value = ''; /* picking the same file again fires change again */
            });
        }
        $('#clear').addEventListener('click', clearAll);

        /* The whole window takes drops; the drop zone lights up. */
        const zone = $('#dropzone');
        let depth = 0;
        const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes('Files');
        document.addEventListener('dragenter', (e) => {
            if (!hasFiles(e)) return;
            e.preventDefault();
            depth++;
            zone.classList.add('is-dragover');
        });
        document.addEventListener('dragover', (e) => {
            if (!hasFiles(e)) return;
            e.preventDefault();
            e.dataTransfer.dropEffect = 'copy';
        });
        document.addEventListener('dragleave', (e) => {
            if (!hasFiles(e)) return;
            depth = Math.max(0, depth - 1);
            if (!depth) zone.classList.remove('is-dragover');
        });
        document.addEventListener('drop', (e) => {
            e.preventDefault(); /* never navigate away to the dropped file */
            depth = 0;
            zone.classList.remove('is-dragover');
            addFiles(filesFromTransfer(e.dataTransfer));
        });

        document.addEventListener('paste', (e) => {
            const files = filesFromTransfer(e.clipboardData)
                .filter((f) => !f.type || /^image\//.test(f.type));
            if (!files.length) return;
            e.preventDefault();
            addFiles(files.map((f, i) => (f.name && f.name !== 'image.png'
                ? f
                : new File([f], `Pasted image${files.length > 1 ? ` ${i + 1}` : ''}`, { type: f.type }))));
        });

        if (/Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent || '')) {
            $('#paste-key').textContent = '⌘';
        }
    }

    function setupTokenDialog() {
        const dialog = $('#token-dialog');
        $('#token-cancel').addEventListener('click', () => dialog.close('cancel'));
    }

    function start() {
        setupTokenDialog();
        model.ready = loadModel();
        setupInput();
    }

    if (document.readyState === 'loading') {
        document.addEventListener('DOMContentLoaded', start);
    } else {
        start();
    }
})();
