"""hf_mirror.py: a tiny stand-in for the Hugging Face hub on loopback, for
testing build/fetch-model (tests/test_fetch.py) and baking weights into the
container image (tests/test_docker.sh).

Like the hub, GET /<owner>/<repo>/resolve/main/model.safetensors answers 302
with X-Linked-Etag (the SHA-256) and X-Linked-Size, and the redirect target
serves the bytes with HTTP Range support. A fault mode per repository makes it
misbehave: corrupt, truncate, truncate_once, error500, notfound, norange,
noetag, wrongetag, slow.

    /usr/bin/python3 tests/hf_mirror.py --port 0 --file timm/resnet50.tv2_in1k=PATH
prints "port N" and serves until killed.
"""
import hashlib
import http.server
import sys
import threading
import time


class Mirror:
    """Serves files (repo -> bytes) in a background thread on 127.0.0.1."""

    def __init__(self, host="127.0.0.1", port=0):
        self.files = {}  # "timm/resnet50.tv2_in1k" -> bytes
        self.modes = {}  # repo -> fault mode
        self.log = []  # (method, path, Range header or None)
        self.served = {}  # repo -> number of body requests answered
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.handle_get(head=True)

            def do_GET(self):
                self.handle_get(head=False)

            def send_empty(self, code, headers=()):
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def handle_get(self, head):
                rng = self.headers.get("Range")
                mirror.log.append((self.command, self.path, rng))
                parts = self.path.split("/")
                # /owner/name/resolve/main/model.safetensors
                if len(parts) == 6 and parts[3] == "resolve" and parts[5] == "model.safetensors":
                    repo = parts[1] + "/" + parts[2]
                    if repo not in mirror.files:
                        return self.send_empty(404)
                    mode = mirror.modes.get(repo, "ok")
                    if mode == "error500":
                        return self.send_empty(500)
                    if mode == "notfound":
                        return self.send_empty(404)
                    data = mirror.files[repo]
                    sha = hashlib.sha256(data).hexdigest()
                    if mode == "wrongetag":
                        sha = hashlib.sha256(data + b"x").hexdigest()
                    headers = [("Location", "/cdn/" + repo), ("X-Repo-Commit", "0" * 40)]
                    if mode != "noetag":
                        headers += [("X-Linked-Etag", '"%s"' % sha),
                                    ("X-Linked-Size", str(len(data)))]
                    return self.send_empty(302, headers)
                if self.path.startswith("/cdn/"):
                    return self.serve_body(self.path[5:], rng, head)
                self.send_empty(404)

            def serve_body(self, repo, rng, head):
                if repo not in mirror.files:
                    return self.send_empty(404)
                mode = mirror.modes.get(repo, "ok")
                data = mirror.files[repo]
                if mode == "corrupt":
                    data = bytes([data[0] ^ 1]) + data[1:]
                start = 0
                if rng and mode != "norange":
                    try:
                        start = int(rng.split("=", 1)[1].split("-", 1)[0])
                    except (IndexError, ValueError):
                        return self.send_empty(400)
                    if start >= len(data):
                        return self.send_empty(416, [("Content-Range", "bytes */%d" % len(data))])
                    self.send_response(206)
                    self.send_header("Content-Range",
                                     "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if head:
                    return
                n = mirror.served.get(repo, 0)
                mirror.served[repo] = n + 1
                if mode == "truncate" or (mode == "truncate_once" and n == 0):
                    # Promise the whole body, send half of it, hang up.
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if mode == "slow":
                    # About 3 MB/s, so that progress output can be watched.
                    for i in range(0, len(body), 65536):
                        self.wfile.write(body[i:i + 65536])
                        time.sleep(0.02)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = "http://%s:%d" % (host, self.port)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv):
    import argparse

    ap = argparse.ArgumentParser(description="serve files the way the Hugging Face hub does")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--file", action="append", default=[], metavar="REPO=PATH")
    ap.add_argument("--mode", default="ok", help="fault mode for every repository")
    a = ap.parse_args(argv)
    m = Mirror(a.host, a.port)
    for spec in a.file:
        repo, path = spec.split("=", 1)
        with open(path, "rb") as f:
            m.files[repo] = f.read()
        m.modes[repo] = a.mode
    print("port %d" % m.port, flush=True)
    try:
        m.thread.join()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
