#!/usr/bin/env python3
"""A minimal OTLP/HTTP receiver for the tests: decodes every POST with the official
OpenTelemetry protobuf definitions (PyPI `opentelemetry-proto`) and appends one JSON line per
request to OUT: {"path": "/v1/traces", "body": <MessageToDict of the request>}.

Usage: receiver.py OUT PORTFILE [MODE]
  MODE ok (default): answer 200 with an empty Export*ServiceResponse
       fail500:      answer 500 to everything (decoded and written all the same)
       slow:         wait 30 s before answering 200
The chosen port is written to PORTFILE once listening."""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
except ImportError as e:  # the test reports this line
    sys.stderr.write(
        "receiver.py: missing Python package: %s; install it with "
        "`python3 -m pip install opentelemetry-proto` (.ci/run does)\n" % e
    )
    sys.exit(3)

OUT, PORTFILE = sys.argv[1], sys.argv[2]
MODE = sys.argv[3] if len(sys.argv) > 3 else "ok"
TYPES = {
    "/v1/traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse),
    "/v1/logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse),
}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        kinds = TYPES.get(self.path)
        if kinds is None:
            self.send_response(404)
            self.end_headers()
            return
        req = kinds[0]()
        req.ParseFromString(body)
        rec = {
            "path": self.path,
            "content_type": self.headers.get("Content-Type"),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": MessageToDict(req),
        }
        with open(OUT, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if MODE == "slow":
            time.sleep(30)
        status = 500 if MODE == "fail500" else 200
        payload = kinds[1]().SerializeToString()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(PORTFILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os

os.rename(PORTFILE + ".tmp", PORTFILE)
server.serve_forever()
