//! How fast the TUI opens a capture and answers a key, on two captures:
//!
//! - **real**: the capture `pm2-trace record` made from a real pm2 7.0.4 daemon with 20 apps,
//!   two getMonitorData pollers and a restart every 500 ms (made once and cached under
//!   `target/bench-captures/`; how, exactly: benches/support/real_capture.rs; at least
//!   PM2_TRACE_BENCH_MB, default 550, MB): few events, large ones (getMonitorData replies
//!   carrying 20 apps' `pm2_env`);
//! - **synthetic**, a million events: the recording of a real crash loop
//!   (`tests/tui_captures/crash-loop-5.4.3.bin`: a restart, its RPC exchange, daemon log
//!   lines, bus events, process events) repeated with shifted times and connection ids,
//!   between bursts of app output lines, as a long recording of a busy app would be.
//!
//! For each it measures:
//!
//! - open: reading and indexing the whole capture, the rules, and the first frame;
//! - per key: the key's work plus one redraw (120x40), for moves, zoom, pan, findings,
//!   filters, a detail pane that re-reads its event from the file;
//! - search: a `/` search that has to scan every row.
//!
//! Run: `cargo bench --bench tui_open [-- EVENTS [LOG_LINES_PER_RESTART]]` (synthetic: default
//! 1,000,000 events and 2000 lines: 22% of the events are the restart story, 62% of the
//! bytes; prints, asserts nothing). PM2_TRACE_BENCH_SYNTHETIC=1 measures only the synthetic
//! capture, PM2_TRACE_BENCH_REAL=1 only the real one.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use pm2_trace::capture::{CaptureReader, CaptureWriter};
use pm2_trace::event::{Event, Stamped, WireMessage};
use pm2_trace::views::tui::{draw, App, Model, STREAM_REDRAW};
use pm2_trace::wire::amp::{Arg, Message};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "support/real_capture.rs"]
mod real_capture;

/// The allocator the shipped binary uses (src/main.rs), so that the TUI is measured as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn template() -> (pm2_trace::event::CaptureInfo, Vec<Stamped>) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tui_captures/crash-loop-5.4.3.bin");
    let mut r = CaptureReader::open(&path).expect("read the template capture");
    let info = r.info().clone();
    let events: Vec<Stamped> = r.by_ref().map(|e| e.expect("template event")).collect();
    (info, events)
}

fn shift(ev: &Stamped, dt: u64, conn_base: u64) -> Stamped {
    let mut e = ev.clone();
    e.t += dt;
    match &mut e.event {
        Event::RpcConnect { conn, .. }
        | Event::RpcMessage { conn, .. }
        | Event::RpcClose { conn, .. }
        | Event::RpcUndecodable { conn, .. } => *conn += conn_base,
        _ => {}
    }
    e
}

fn generate(path: &Path, n: u64, per_cycle_logs: u64) -> u64 {
    let (info, story) = template();
    let t_first = story.first().map_or(0, |e| e.t);
    let story_span = story.last().map_or(0, |e| e.t) - t_first + 1;
    // App output between the restarts, shaped like the real log:out messages.
    let log = |i: u64| -> Event {
        Event::BusMessage {
            msg: WireMessage(Message::new(vec![
                Arg::Str("log:out".into()),
                Arg::json(serde_json::json!({
                    "process": {"pm_id": 0, "name": "web", "rev": null, "namespace": "default"},
                    "data": format!("GET /api/items/{} 200 {} ms\n", i % 9973, i % 97),
                    "at": 1_764_086_502_000i64 + (i / 10) as i64
                })),
            ])),
        }
    };
    let cycle_span = story_span + per_cycle_logs * 20_000_000; // logs every 20 ms
    let mut w = CaptureWriter::create(path, &info, true).expect("create capture");
    let mut written = 0u64;
    let mut cycle = 0u64;
    while written < n {
        let base = cycle * cycle_span;
        for ev in &story {
            if written >= n {
                break;
            }
            w.write(&shift(ev, base, cycle * 1000), "").expect("write");
            written += 1;
        }
        let t_logs = t_first + base + story_span;
        for k in 0..per_cycle_logs {
            if written >= n {
                break;
            }
            let ev = Stamped {
                t: t_logs + k * 20_000_000,
                event: log(written),
            };
            w.write(&ev, "").expect("write");
            written += 1;
        }
        cycle += 1;
    }
    w.finish().expect("finish");
    written
}

/// What opening a capture as the TUI does took.
struct Opened {
    app: App,
    term: Terminal<TestBackend>,
    open: Duration,
    first_rows: Option<Duration>,
    frames_while_loading: u32,
    /// CPU time of the whole process during the open, and of this (the view's) thread.
    cpu: f64,
    main_cpu: f64,
}

/// Open `path` as `pm2-trace tui` does (`run_file`, `run_loop` in src/views/tui/mod.rs):
/// one turn of the loader, a frame when STREAM_REDRAW has passed since the last one,
/// again; the last frame once everything is loaded. The loop never waits for keys while
/// it loads.
fn open(path: &Path) -> Opened {
    let cpu0 = cpu_s();
    let main0 = thread_cpu_s();
    let t = Instant::now();
    let (model, loader) = Model::open(path).expect("open");
    let mut first_rows = None;
    let mut frames_while_loading = 0;
    let mut term = Terminal::new(TestBackend::new(120, 40)).expect("terminal");
    let mut app = App::loading(model, loader, true);
    let mut last_draw: Option<Instant> = None;
    loop {
        let done = app.pump_loader();
        if first_rows.is_none() && !app.model.is_empty() {
            first_rows = Some(t.elapsed());
        }
        if done || last_draw.is_none_or(|d| d.elapsed() >= STREAM_REDRAW) {
            term.draw(|f| draw::draw(f, &mut app)).expect("draw");
            last_draw = Some(Instant::now());
            if done {
                break;
            }
            frames_while_loading += 1;
        }
    }
    Opened {
        app,
        term,
        open: t.elapsed(),
        first_rows,
        frames_while_loading,
        cpu: cpu_s() - cpu0,
        main_cpu: thread_cpu_s() - main0,
    }
}

/// The open alone, in a new process of this benchmark (`PM2_TRACE_BENCH_OPEN_ONLY`): as
/// `pm2-trace tui` starts, with none of the memory the passes before it used. In this
/// process the allocator keeps that memory (`keep_freed_memory`), so the open measured
/// after them never waits for the kernel to zero fresh pages; `pm2-trace tui` does (with
/// huge pages, a fifth of its samples on this machine). (seconds, CPU seconds, of which the
/// kernel's.)
fn open_in_a_fresh_process(path: &Path) -> (f64, f64, f64) {
    let out = std::process::Command::new(std::env::current_exe().expect("this benchmark"))
        .env("PM2_TRACE_BENCH_OPEN_ONLY", path)
        .output()
        .expect("run the benchmark again");
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<f64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums[..] {
        [secs, cpu, sys] => (secs, cpu, sys),
        _ => panic!(
            "the fresh process said {text:?} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// In the new process: open, then print seconds, CPU seconds and the kernel's share.
fn open_only(path: &Path) {
    let o = open(path);
    let (_, sys) = user_sys_s();
    println!("{} {} {sys}", o.open.as_secs_f64(), o.cpu);
}

fn rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0)
}

/// CPU time used by this process so far (user + system), in seconds.
fn cpu_s() -> f64 {
    let (user, sys) = user_sys_s();
    user + sys
}

/// CPU time used by this process so far: (user, system), in seconds.
fn user_sys_s() -> (f64, f64) {
    // SAFETY: getrusage writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(u.ru_utime), tv(u.ru_stime))
}

/// CPU time used by the calling thread so far, in seconds (what the breakdown reports: wall
/// time on a loaded 2-core machine says more about the other processes).
fn thread_cpu_s() -> f64 {
    // SAFETY: clock_gettime writes into the struct we pass.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // As `pm2-trace tui` does (src/main.rs).
    pm2_trace::alloc::keep_freed_memory();
    pm2_trace::alloc::no_huge_pages();
    if let Some(path) = std::env::var_os("PM2_TRACE_BENCH_OPEN_ONLY") {
        return open_only(Path::new(&path));
    }
    let nums: Vec<u64> = std::env::args()
        .skip(1)
        .filter(|a| a.chars().all(|c| c.is_ascii_digit()) && !a.is_empty())
        .map(|a| a.parse().expect("a number"))
        .collect();
    let only_synthetic = std::env::var_os("PM2_TRACE_BENCH_SYNTHETIC").is_some();
    let only_real = std::env::var_os("PM2_TRACE_BENCH_REAL").is_some();
    if !only_synthetic {
        let mb: u64 = std::env::var("PM2_TRACE_BENCH_MB")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(550);
        let path = real_capture::real_capture(mb * 1_000_000);
        println!(
            "== real: {} (recorded from a pm2 {} daemon, {} apps, getMonitorData pollers)",
            path.display(),
            real_capture::VERSION,
            real_capture::APPS
        );
        measure(&path, "recorded from a real daemon");
    }
    if !only_real {
        let n = nums.first().copied().unwrap_or(1_000_000);
        let logs = nums.get(1).copied().unwrap_or(2000);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("million.bin");
        let t = Instant::now();
        let written = generate(&path, n, logs);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "== synthetic: generated {written} events ({:.0} MB; {logs} app output lines per restart) in {:.1} s",
            size as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
        measure(&path, "synthetic");
    }
}

/// Open `path` in the TUI's model, press keys, search; print the figures (`what`: which
/// capture, for the table).
fn measure(path: &Path, what: &str) {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);

    // The capture writer drops a capture's pages from the page cache once written (so does
    // the recorder): read the file once, so that every pass below reads from memory, as a
    // capture opened again does.
    std::io::copy(
        &mut std::fs::File::open(path).expect("open"),
        &mut std::io::sink(),
    )
    .expect("read the capture");

    // Where the time goes: reading alone, reading and interpreting.
    let (t, c) = (Instant::now(), thread_cpu_s());
    let mut r = CaptureReader::open(path).expect("open");
    let info = r.info().clone();
    let mut k = 0u64;
    for e in r.by_ref() {
        e.expect("event");
        k += 1;
    }
    let read_only = t.elapsed();
    let read_cpu = thread_cpu_s() - c;
    println!(
        "  read + decode only: {:.0} ms, {:.0} ms CPU ({k} events)",
        ms(read_only),
        read_cpu * 1e3
    );
    let (t, c) = (Instant::now(), thread_cpu_s());
    let r = CaptureReader::open(path).expect("open");
    let mut interp = pm2_trace::timeline::Interpreter::new(&info);
    let mut buf = Vec::new();
    let mut entries = 0;
    for e in r {
        buf.clear();
        interp.push_into(&e.expect("event"), &mut buf);
        entries += buf.len();
    }
    println!(
        "  read + decode + interpret: {:.0} ms, {:.0} ms CPU ({entries} entries)",
        ms(t.elapsed()),
        (thread_cpu_s() - c) * 1e3
    );
    let (t, c) = (Instant::now(), thread_cpu_s());
    let r = CaptureReader::open(path).expect("open");
    let mut interp = pm2_trace::timeline::Interpreter::new(&info);
    let mut tl = pm2_trace::timeline::Timeline::new(&info);
    let mut describe = Duration::ZERO;
    let mut apply = Duration::ZERO;
    for e in r {
        buf.clear();
        interp.push_into(&e.expect("event"), &mut buf);
        for en in &buf {
            let t = Instant::now();
            tl.apply(en);
            apply += t.elapsed();
            let t = Instant::now();
            std::hint::black_box(en.describe());
            describe += t.elapsed();
        }
    }
    println!(
        "  read + decode + interpret + timeline + describe: {:.0} ms, {:.0} ms CPU (timeline {:.0} ms, describe {:.0} ms)",
        ms(t.elapsed()),
        (thread_cpu_s() - c) * 1e3,
        ms(apply),
        ms(describe)
    );

    // Open: read + index + rules + first frame.
    let Opened {
        mut app,
        mut term,
        open,
        first_rows,
        frames_while_loading,
        cpu,
        main_cpu,
    } = open(path);
    let t_rules = Instant::now();
    std::hint::black_box(pm2_trace::rules::analyze(&app.model.timeline));
    let rules_time = t_rules.elapsed();
    let rows = app.model.len();
    let findings = app.model.findings.len();
    println!(
        "  the rules alone on the loaded timeline: {:.0} ms",
        ms(rules_time)
    );
    println!(
        "open: {:.0} ms for {rows} rows, {cpu:.2} s CPU on 3 threads ({main_cpu:.2} s on the view's; {findings} findings; first rows after {:.0} ms, {frames_while_loading} loading frames); peak RSS {:.0} MB",
        ms(open),
        first_rows.map_or(0.0, ms),
        rss_mb()
    );
    let (fresh, fresh_cpu, fresh_sys) = open_in_a_fresh_process(path);
    println!(
        "open in a fresh process, as `pm2-trace tui` starts: {:.0} ms, {fresh_cpu:.2} s CPU ({fresh_sys:.2} s of it the kernel's)",
        fresh * 1e3
    );

    // Keys: each one's work and a redraw.
    let mut key_times: Vec<(String, f64)> = Vec::new();
    let t = Instant::now();
    for _ in 0..20 {
        term.draw(|f| draw::draw(f, &mut app)).expect("draw");
    }
    key_times.push((
        "redraw (whole capture in view)".into(),
        ms(t.elapsed()) / 20.0,
    ));
    let mut press = |app: &mut App, term: &mut Terminal<TestBackend>, name: &str, k: KeyCode| {
        let reps = 20;
        let t = Instant::now();
        for _ in 0..reps {
            app.key(KeyEvent::new(k, KeyModifiers::NONE));
            term.draw(|f| draw::draw(f, app)).expect("draw");
        }
        key_times.push((name.to_owned(), ms(t.elapsed()) / reps as f64));
    };
    press(
        &mut app,
        &mut term,
        "j (next event, detail re-read)",
        KeyCode::Char('j'),
    );
    press(&mut app, &mut term, "PgDn", KeyCode::PageDown);
    press(&mut app, &mut term, "G (last event)", KeyCode::Char('G'));
    press(&mut app, &mut term, "+ (zoom in)", KeyCode::Char('+'));
    press(&mut app, &mut term, "- (zoom out)", KeyCode::Char('-'));
    press(&mut app, &mut term, "l (pan)", KeyCode::Char('l'));
    press(&mut app, &mut term, "0 (whole capture)", KeyCode::Char('0'));
    press(&mut app, &mut term, "n (next finding)", KeyCode::Char('n'));
    press(&mut app, &mut term, "t (wall clock)", KeyCode::Char('t'));
    press(
        &mut app,
        &mut term,
        "2 (toggle bus: refilter)",
        KeyCode::Char('2'),
    );
    press(
        &mut app,
        &mut term,
        "a (cycle app: refilter)",
        KeyCode::Char('a'),
    );
    press(&mut app, &mut term, "Tab", KeyCode::Tab);
    for (name, t) in &key_times {
        println!("key {name:<34} {t:>8.2} ms");
    }
    let worst = key_times.iter().map(|(_, t)| *t).fold(0.0, f64::max);
    println!("worst key + redraw: {worst:.2} ms (a frame at 60 Hz is 16.7 ms)");

    // A search that scans every row.
    app.key(KeyEvent::new(KeyCode::Char('x'), KeyModifiers::NONE));
    app.key(KeyEvent::new(KeyCode::Char('g'), KeyModifiers::NONE));
    let t = Instant::now();
    for c in "/no such words".chars() {
        app.key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    }
    app.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    term.draw(|f| draw::draw(f, &mut app)).expect("draw");
    let search = t.elapsed();
    println!(
        "search through {rows} rows (no match): {:.0} ms",
        ms(search)
    );
    println!();
    println!("| figure | target | measured | reference |");
    println!("|---|---|---|---|");
    println!(
        "| TUI open of {}k events ({:.0} MB, {what}): first rows shown / fully indexed with findings | ~1 s | {:.0} ms / {:.1} s; in a fresh process, as `pm2-trace tui` starts: {fresh:.1} s | reading + decoding alone {:.1} s ({:.1} s CPU); {cpu:.1} s CPU, {main_cpu:.1} s of it on the view's thread; in the fresh process {fresh_cpu:.1} s CPU, {fresh_sys:.1} s of it the kernel's |",
        rows / 1000,
        size as f64 / 1e6,
        first_rows.map_or(0.0, ms),
        (open - rules_time).as_secs_f64(),
        read_only.as_secs_f64(),
        read_cpu
    );
    println!(
        "| TUI key + redraw (120x40) on {}k events ({what}), worst of {} keys | < 16.7 ms (a frame) | {worst:.2} ms | full redraw {:.2} ms; search of every row {:.0} ms |",
        rows / 1000,
        key_times.len(),
        key_times[0].1,
        ms(search)
    );
    println!(
        "| TUI peak memory with {}k events ({what}) | | {:.0} MB | VmHWM of the benchmark process |",
        rows / 1000,
        rss_mb()
    );
}
