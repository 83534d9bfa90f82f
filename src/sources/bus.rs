//! An ordinary subscriber on the daemon's event bus (`pub.sock`).
//!
//! The bus is not on any client's path, so messages are decoded here, on arrival, and
//! stamped with the instant their last byte was read. When the daemon goes away the
//! subscriber says so and keeps trying to reconnect until it is stopped.

use crate::event::{Event, EventSink, WireMessage};
use crate::safe_dir::{SafeDir, SafeDirError};
use crate::wire::amp::Decoder;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct BusSubscriber {
    stop: Arc<AtomicBool>,
    stream: Arc<std::sync::Mutex<Option<UnixStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BusSubscriber {
    /// Subscribe to `pub_path` and emit every message into `sink`. Returns once the first
    /// connection attempt was made (so events from right after start are not missed).
    ///
    /// The socket is `name` in `dir`, reached through the directory's descriptor and only
    /// when the directory's owner listens there ([`SafeDir::open_socket`]); it is looked up
    /// again at each reconnection (a restarted daemon binds a new socket). When
    /// `daemon_pid` is known, only that process is subscribed to.
    pub(crate) fn start(
        dir: SafeDir,
        name: OsString,
        daemon_pid: Option<i32>,
        sink: EventSink,
    ) -> std::io::Result<BusSubscriber> {
        let stop = Arc::new(AtomicBool::new(false));
        let stream: Arc<std::sync::Mutex<Option<UnixStream>>> = Default::default();
        let path = dir.display(&name);
        let connect = move || {
            dir.open_socket(&name)
                .and_then(|s| s.expect_listener(daemon_pid).connect())
        };
        let first = connect();
        let thread = {
            let (stop, stream) = (stop.clone(), stream.clone());
            std::thread::Builder::new()
                .name("bus".into())
                .spawn(move || run(path, connect, first, sink, &stop, &stream))?
        };
        Ok(BusSubscriber {
            stop,
            stream,
            thread: Some(thread),
        })
    }

    pub(crate) fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Under the stream's lock: the thread either sees `stop` before it starts reading
        // a new stream, or has published that stream here to be shut down. (A subscriber
        // stopped right after it started, before its thread had published its first
        // stream, waited forever on an idle daemon's bus.)
        {
            let g = self.stream.lock().unwrap_or_else(|e| e.into_inner());
            self.stop.store(true, Ordering::SeqCst);
            if let Some(s) = g.as_ref() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BusSubscriber {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(
    path: std::path::PathBuf,
    connect: impl Fn() -> Result<UnixStream, SafeDirError>,
    mut attempt: Result<UnixStream, SafeDirError>,
    sink: EventSink,
    stop: &AtomicBool,
    shared: &std::sync::Mutex<Option<UnixStream>>,
) {
    let mut was_up = false;
    let mut reported_down = false;
    while !stop.load(Ordering::SeqCst) {
        match attempt {
            Ok(mut s) => {
                {
                    let mut g = shared.lock().unwrap_or_else(|e| e.into_inner());
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    *g = s.try_clone().ok();
                }
                sink.emit(Event::BusLink {
                    up: true,
                    detail: format!("subscribed to {}", path.display()),
                });
                was_up = true;
                reported_down = false;
                let why = pump(&mut s, &sink);
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                sink.emit(Event::BusLink {
                    up: false,
                    detail: why,
                });
            }
            Err(e) => {
                if !reported_down {
                    let what = if was_up { "lost" } else { "cannot subscribe" };
                    sink.emit(Event::BusLink {
                        up: false,
                        detail: format!("{what}: {e}"),
                    });
                    reported_down = true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        attempt = connect();
    }
}

fn pump(s: &mut UnixStream, sink: &EventSink) -> String {
    let mut dec = Decoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => return "the daemon closed the bus".into(),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return format!("bus read failed: {e}"),
        };
        dec.push(&buf[..n]);
        while let Some(m) = dec.next() {
            match m {
                Ok(msg) => sink.emit(Event::BusMessage {
                    msg: WireMessage(msg),
                }),
                Err(e) => {
                    sink.emit(Event::Note {
                        level: crate::event::NoteLevel::Warning,
                        text: format!("bus stream undecodable: {e}; resubscribing"),
                    });
                    return format!("undecodable bus stream at {}", e.offset());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subscriber stopped right after it started, on a bus that says nothing (an idle
    /// daemon's), ends: before, its thread could publish its stream after the stop had
    /// looked for it and then read forever.
    #[test]
    fn a_subscriber_stopped_at_once_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let _bus = std::os::unix::net::UnixListener::bind(tmp.path().join("pub.sock")).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let path = tmp.path().to_owned();
        std::thread::spawn(move || {
            // Stopped after a varying moment, so that some stops meet the thread as it
            // begins to read.
            for n in 0..2000u32 {
                let dir = SafeDir::open(&path).unwrap();
                let (sink, _rx) = EventSink::channel(1024);
                let bus = BusSubscriber::start(dir, "pub.sock".into(), None, sink).unwrap();
                let spin = std::time::Instant::now();
                while spin.elapsed() < Duration::from_nanos(u64::from(n % 200) * 500) {
                    std::hint::spin_loop();
                }
                bus.stop();
            }
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("2000 subscribers stopped at once end within 60 s");
    }
}
