#!/usr/bin/env python3
"""A Python app whose server is a double-forked helper on a unix socket.

The process pm2 starts (the "owner") forks a helper that forks again and leaves (the
classic daemonising double fork, with setsid), so the server is reparented away from
pm2's process tree. The server binds SOCKET_PATH (a unix stream socket) and reports
back on a pipe: `ok` or `busy <errno>`. It does not remove a path that exists (another
instance may be serving there), so while an old server holds the path, a new one cannot
bind it. The owner prints, in its own words,

    unix-double-fork[owner pid=N]: cannot serve on PATH: socket busy, giving up

(nothing that says EADDRINUSE or "address in use") and exits 1.

On SIGINT/SIGTERM the owner exits at once; the server notices its owner is gone and keeps
serving for DRAIN_MS (default 12000) before it closes, removes the path and exits.
HARD_CAP_MS (default 20000) bounds its life without an owner. With DRAIN_UNTIL=<file>,
the drain also ends as soon as that file exists.
"""
import os
import signal
import socket
import sys
import time

path = os.environ.get("SOCKET_PATH", "/tmp/unix-double-fork.sock")
drain_ms = int(os.environ.get("DRAIN_MS", "12000"))
hard_cap_ms = int(os.environ.get("HARD_CAP_MS", "20000"))
drain_until = os.environ.get("DRAIN_UNTIL", "")


def server(owner, wfd):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
    except OSError as e:
        os.write(wfd, ("busy %d\n" % e.errno).encode())
        os._exit(1)
    s.listen(16)
    os.write(wfd, b"ok\n")
    os.close(wfd)
    s.settimeout(0.25)
    gone_at = None
    while True:
        if gone_at is None:
            try:
                os.kill(owner, 0)
            except OSError:
                gone_at = time.time()
                print("unix-double-fork[server pid=%d]: owner gone, draining %d ms"
                      % (os.getpid(), drain_ms), flush=True)
        limit = min(drain_ms, hard_cap_ms) / 1000.0
        if gone_at is not None and (time.time() - gone_at >= limit
                                    or (drain_until and os.path.exists(drain_until))):
            break
        try:
            c, _ = s.accept()
            c.sendall(b"unix-double-fork\n")
            c.close()
        except (socket.timeout, OSError):
            pass
    s.close()
    try:
        os.unlink(path)
    except OSError:
        pass
    os._exit(0)


def main():
    owner = os.getpid()
    r, w = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(r)
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            server(owner, w)
        os._exit(0)
    os.close(w)
    os.waitpid(helper, 0)
    tag = "unix-double-fork[owner pid=%d]" % owner
    reply = os.read(r, 64).decode().strip()
    if reply != "ok":
        print("%s: cannot serve on %s: socket busy, giving up" % (tag, path),
              file=sys.stderr, flush=True)
        sys.exit(1)
    print("%s: serving on %s" % (tag, path), flush=True)

    def stop(sig, _frame):
        print("%s: signal %d, exiting at once" % (tag, sig), flush=True)
        os._exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(3600)


main()
