#!/usr/bin/python3
"""A pooled keep-alive HTTP client, as inference clients are: one of
urllib3 (what requests uses), httpx (what the OpenAI SDK uses) or the
standard library's http.client on one connection. Sends OpenAI-style
completion requests to the model-server stand-in and writes one JSON line per
request to stdout: when it ran, which backend answered (X-Aimesh-Backend),
the connection's local port, and the error if it failed.

Used by tests/e2e/lifecycle_e2e_test.cc. Stops after --requests requests or
--seconds seconds, whichever comes first; never retries on its own beyond
what the library does by default."""
import argparse
import http.client
import json
import socket
import sys
import threading
import time


def body(args):
    return json.dumps({"model": "stand-in", "prompt": "hello", "max_tokens": args.tokens,
                       "stream": args.stream}).encode()


def record(out, lock, rec):
    with lock:
        out.write(json.dumps(rec) + "\n")
        out.flush()


class Urllib3Client:
    def __init__(self, args):
        import urllib3
        self.urllib3 = urllib3
        self.pool = urllib3.PoolManager(maxsize=args.pool, block=False, retries=False)
        self.args = args

    def request(self, rec):
        r = self.pool.request("POST", self.args.url, body=body(self.args),
                              headers={"Content-Type": "application/json"}, preload_content=False)
        rec["stage"] = "body"
        port = r.connection.sock.getsockname()[1] if r.connection and r.connection.sock else 0
        data = b"".join(r.stream(4096))
        backend = r.headers.get("X-Aimesh-Backend", "")
        r.release_conn()
        return r.status, backend, port, data


class HttpxClient:
    def __init__(self, args):
        import httpx
        limits = httpx.Limits(max_keepalive_connections=args.pool, max_connections=max(args.pool, args.threads))
        self.client = httpx.Client(limits=limits, timeout=30.0)
        self.args = args

    def request(self, rec):
        with self.client.stream("POST", self.args.url, content=body(self.args),
                                headers={"Content-Type": "application/json"}) as r:
            rec["stage"] = "body"
            data = b"".join(r.iter_bytes())
            port = 0
            stream = r.extensions.get("network_stream")
            if stream is not None:
                sock = stream.get_extra_info("socket")
                if sock is not None:
                    port = sock.getsockname()[1]
            return r.status_code, r.headers.get("X-Aimesh-Backend", ""), port, data


class HttpClientClient:
    """One http.client connection, reopened only when the library says it
    is closed: the plainest keep-alive client."""

    def __init__(self, args):
        self.args = args
        host = args.url.split("//", 1)[1].split("/", 1)[0]
        self.path = "/" + args.url.split("//", 1)[1].split("/", 1)[1]
        self.host, self.port = host.rsplit(":", 1)
        self.host = self.host.strip("[]")
        self.conn = None

    def request(self, rec):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
        self.conn.request("POST", self.path, body=body(self.args), headers={"Content-Type": "application/json"})
        port = self.conn.sock.getsockname()[1] if self.conn.sock else 0
        r = self.conn.getresponse()
        rec["stage"] = "body"
        data = r.read()
        return r.status, r.getheader("X-Aimesh-Backend", ""), port, data

    def reset(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lib", choices=["urllib3", "httpx", "httpclient"], default="urllib3")
    p.add_argument("--url", required=True)
    p.add_argument("--requests", type=int, default=10)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--interval", type=float, default=0.1, help="pause after each request, per thread")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pool", type=int, default=1)
    p.add_argument("--pool-per-thread", action="store_true",
                   help="each thread its own client and pool (else one pool shared by the threads)")
    p.add_argument("--tokens", type=int, default=4)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--go-file", default="", help="wait until this file exists before each request")
    args = p.parse_args()

    lock = threading.Lock()
    counter = [0]
    deadline = time.monotonic() + args.seconds
    client = {"urllib3": Urllib3Client, "httpx": HttpxClient, "httpclient": HttpClientClient}[args.lib](args)

    def worker():
        own = HttpClientClient(args) if args.lib == "httpclient" else client
        if args.pool_per_thread:
            own = {"urllib3": Urllib3Client, "httpx": HttpxClient, "httpclient": HttpClientClient}[args.lib](args)
        while time.monotonic() < deadline:
            with lock:
                if counter[0] >= args.requests:
                    return
                i = counter[0]
                counter[0] += 1
            if args.go_file:
                while time.monotonic() < deadline:
                    try:
                        open(args.go_file).close()
                        break
                    except OSError:
                        time.sleep(0.01)
            start = time.monotonic()
            # stage: "request" until the response's status line arrived, then
            # "body": a failure in "body" is a response cut under the client.
            rec = {"i": i, "start": start, "stage": "request"}
            try:
                status, backend, port, data = own.request(rec)
                rec.update(ok=status == 200 and (not args.stream or b"[DONE]" in data), status=status,
                           backend=backend, port=port, bytes=len(data))
            except Exception as e:  # report every failure as the library raised it
                rec.update(ok=False, error=type(e).__name__ + ": " + str(e))
                if args.lib == "httpclient":
                    own.reset()
            rec["end"] = time.monotonic()
            record(sys.stdout, lock, rec)
            time.sleep(args.interval)

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
