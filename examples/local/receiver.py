#!/usr/bin/env python3
"""A stand-in for Jenkins: accepts the webhook plugin's POSTs on 127.0.0.1:9090,
verifies X-Signature with the demo key and drops repeats by Idempotency-Key."""
import hashlib, hmac, json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

KEY = b"demo-jenkins-key"
seen = set()

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        expected = "sha256=" + hmac.new(KEY, body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(expected, self.headers.get("x-signature", ""))
        key = self.headers.get("idempotency-key")
        repeat = key in seen
        seen.add(key)
        doc = json.loads(body)
        print(f"receiver: POST {self.path} signature={'valid' if ok else 'INVALID'} "
              f"idempotency-key={key}{' (repeat, dropped)' if repeat else ''} "
              f"promote {doc['pipeline']['name']} {doc['version']} into {doc['targetEnvironment']}",
              flush=True)
        self.send_response(202 if ok else 401)
        self.end_headers()

    def log_message(self, *args):
        pass

port = int(sys.argv[1]) if len(sys.argv) > 1 else 9090
HTTPServer(("127.0.0.1", port), Handler).serve_forever()
