// imgclassd.mjs: the server process the browser tests share: build/imgclassd
// started on an ephemeral loopback port, its stderr kept for failure reports,
// readiness polled, and a kill that never waits.
import { spawn } from 'node:child_process';

// One running server: proc (the child), log() (the last 20 kB of its
// stderr) and stop() (SIGKILL, idempotent).
export class Server {
    constructor(proc) {
        this.proc = proc;
        this.stderr = '';
        proc.stderr.on('data', (d) => { this.stderr = (this.stderr + d).slice(-20000); });
    }
    log() {
        return this.stderr;
    }
    stop() {
        const p = this.proc;
        if (p && p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    }
}

// Starts bin with args (--port 0 --bind 127.0.0.1 are added) and resolves
// with { server, port } once it prints the port it listens on; rejects when
// it exits first or prints none within 60 s. onStart receives the Server at
// once, so a caller can stop it even when startup fails.
export function startServer(bin, args, onStart) {
    return new Promise((resolve, reject) => {
        const proc = spawn(bin, [...args, '--port', '0', '--bind', '127.0.0.1'],
            { stdio: ['ignore', 'pipe', 'pipe'] });
        const server = new Server(proc);
        if (onStart) onStart(server);
        let out = '';
        const timer = setTimeout(() => reject(new Error('no port printed within 60 s')), 60_000);
        proc.on('error', (e) => { clearTimeout(timer); reject(e); });
        proc.on('exit', (code, sig) => {
            clearTimeout(timer);
            reject(new Error(`server exited (${code ?? sig}) before it printed a port: ${server.log().slice(-400)}`));
        });
        proc.stdout.on('data', (d) => {
            out += d;
            const m = out.match(/listening on \S*?:(\d+)/);
            if (m) {
                clearTimeout(timer);
                resolve({ server, port: Number(m[1]) });
            }
        });
    });
}

// Resolves once base/readyz answers 200 (the model is loaded); rejects after
// 120 s with the last status or error.
export async function waitReady(base) {
    const deadline = Date.now() + 120_000;
    let last = '';
    while (Date.now() < deadline) {
        try {
            const r = await fetch(`${base}/readyz`);
            if (r.status === 200) return;
            last = `status ${r.status}`;
        } catch (e) {
            last = e.message;
        }
        await new Promise((res) => setTimeout(res, 250));
    }
    throw new Error(`/readyz not 200 within 120 s (${last})`);
}
