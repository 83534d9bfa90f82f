//! Snapshots of the TUI's main screens, drawn with ratatui's TestBackend from captures of
//! real daemons (`tests/tui_captures/`, made by `tests/tui_fixtures.rs`).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use pm2_trace::views::tui::{draw, App, Model, Pane};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::PathBuf;

fn capture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tui_captures")
        .join(name)
}

fn load(name: &str) -> Model {
    Model::load(&capture(name)).unwrap_or_else(|e| panic!("cannot read {name}: {e}"))
}

fn key(app: &mut App, code: KeyCode) {
    app.key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn keys(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn screen(app: &mut App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    // Twice: the first frame tells the app its pane sizes.
    t.draw(|f| draw::draw(f, app)).expect("draw");
    t.draw(|f| draw::draw(f, app)).expect("draw");
    t.backend().to_string()
}

fn snap(name: &str, text: &str) {
    insta::with_settings!({snapshot_path => "tui_snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn crash_loop_with_its_finding_selected() {
    // The rules' own findings for a real crash loop (slow-drain-child on 5.4.3).
    let m = load("crash-loop-5.4.3.bin");
    let kinds: Vec<String> = m.findings.iter().map(|f| f.kind.clone()).collect();
    assert!(kinds.iter().any(|k| k == "crash-loop-errored"), "{kinds:?}");
    let mut app = App::new(m, false);
    screen(&mut app, 120, 40);
    // n until the crash loop's finding is selected.
    for _ in 0..kinds.len() {
        keys(&mut app, "n");
        if app.model.findings[app.fsel].kind == "crash-loop-errored" {
            break;
        }
    }
    assert_eq!(app.model.findings[app.fsel].kind, "crash-loop-errored");
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("crash-loop-errored"), "{s}");
    assert!(s.contains('◆'), "evidence is marked: {s}");
    snap("crash_loop_finding_selected", &s);
    // Enter shows the finding in the detail pane.
    app.set_focus(Pane::Findings);
    key(&mut app, KeyCode::Enter);
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("Detail · finding") && s.contains("Why"), "{s}");
    snap("crash_loop_finding_detail", &s);
    // Enter on an evidence line goes to that event.
    let want = app.evidence.clone();
    let line = loop {
        key(&mut app, KeyCode::Down);
        let line = app.detail.plain_lines()[app.detail.cursor].clone();
        if line.starts_with('◆') || app.detail.cursor + 1 == app.detail.len() {
            break line;
        }
    };
    assert!(line.starts_with('◆'), "an evidence line: {line}");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.focus, Pane::Events);
    assert!(
        want.contains(&(app.sel as u32)),
        "an evidence row is selected"
    );
    let words: String = app.model.text(app.sel).chars().take(20).collect();
    assert!(line.contains(&words), "{line} / {words}");
}

#[test]
fn detail_of_a_restart_process_id_exchange() {
    let m = load("restart-7.0.4.bin");
    let mut app = App::new(m, false);
    screen(&mut app, 120, 40);
    // Find the restart with the search, then open its details.
    keys(&mut app, "/restartProcessId");
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.focus, Pane::Detail);
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("\"method\": \"restartProcessId\""), "{s}");
    assert!(
        s.contains("current_conf"),
        "the call's arguments are shown: {s}"
    );
    snap("restart_process_id_detail", &s);
    // The reply follows the request: collapse all to see both.
    key(&mut app, KeyCode::Char('c'));
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("▾ reply (conn 2, to client) ["), "{s}");
    snap("restart_process_id_reply", &s);
}

#[test]
fn help_overlay() {
    let m = load("restart-7.0.4.bin");
    let mut app = App::new(m, false);
    screen(&mut app, 80, 24);
    keys(&mut app, "?");
    let s = screen(&mut app, 80, 24);
    for k in ["Tab", "+ -", "n N", "/", "q", "mouse", "SIGKILL"] {
        assert!(s.contains(k), "help lists {k}: {s}");
    }
    snap("help_overlay", &s);
    // Any key closes it.
    key(&mut app, KeyCode::Esc);
    assert!(!screen(&mut app, 80, 24).contains("Keys ("));
}

#[test]
fn layout_at_80x24() {
    let m = load("crash-loop-5.4.3.bin");
    let mut app = App::new(m, false);
    let s = screen(&mut app, 80, 24);
    for pane in ["Timeline", "Findings", "Events", "Detail", "? help"] {
        assert!(s.contains(pane), "{pane} shown at 80x24: {s}");
    }
    snap("layout_80x24", &s);
}

#[test]
fn zoom_pan_filter_and_wall_clock() {
    let m = load("crash-loop-5.4.3.bin");
    let mut app = App::new(m, false);
    screen(&mut app, 120, 40);
    let scale = app.scale;
    keys(&mut app, "+");
    assert!((app.scale - scale / 2.0).abs() < 1.0, "+ halves the scale");
    keys(&mut app, "-");
    keys(&mut app, "-");
    assert!(app.scale > scale * 1.5, "- doubles it");
    keys(&mut app, "0");
    let t0 = app.t0;
    key(&mut app, KeyCode::Right);
    assert!(app.t0 > t0, "→ pans");
    // Only bus events.
    keys(&mut app, "134");
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("[all apps · bus]"), "{s}");
    assert!(!s.contains(" rpc "), "{s}");
    keys(&mut app, "x");
    keys(&mut app, "t");
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("Z "), "wall clock times end in Z: {s}");
    // Filter by app: web:0 is the only one.
    keys(&mut app, "a");
    assert!(screen(&mut app, 120, 40).contains("web:0 · "));
}

#[test]
fn resize_redraws_and_small_terminals_are_told() {
    let m = load("crash-loop-5.4.3.bin");
    let mut app = App::new(m, false);
    let big = screen(&mut app, 160, 50);
    let small = screen(&mut app, 80, 24);
    assert_ne!(big, small);
    assert!(small.lines().count() == 24);
    let tiny = screen(&mut app, 40, 10);
    assert!(tiny.contains("at least"), "{tiny}");
}

fn mouse(app: &mut App, kind: crossterm::event::MouseEventKind, column: u16, row: u16) {
    app.mouse(crossterm::event::MouseEvent {
        kind,
        column,
        row,
        modifiers: KeyModifiers::NONE,
    });
}

#[test]
fn mouse_wheel_scrolls_and_click_selects() {
    use crossterm::event::{MouseButton, MouseEventKind};
    let m = load("crash-loop-5.4.3.bin");
    let mut app = App::new(m, false);
    screen(&mut app, 120, 40);
    // Click the third row of the event list.
    let ev = app.hits.events;
    mouse(
        &mut app,
        MouseEventKind::Down(MouseButton::Left),
        ev.x + 5,
        ev.y + 3,
    );
    assert_eq!(app.focus, Pane::Events);
    assert_eq!(app.sel, app.list_top + 2);
    // The wheel over the list moves by three.
    let before = app.sel;
    mouse(&mut app, MouseEventKind::ScrollDown, ev.x + 5, ev.y + 3);
    assert_eq!(app.sel, before + 3);
    // The wheel over the detail pane moves its cursor.
    screen(&mut app, 120, 40);
    let d = app.hits.detail;
    mouse(
        &mut app,
        MouseEventKind::Down(MouseButton::Left),
        d.x + 3,
        d.y + 2,
    );
    assert_eq!(app.focus, Pane::Detail);
    let c = app.detail.cursor;
    mouse(&mut app, MouseEventKind::ScrollDown, d.x + 3, d.y + 2);
    assert!(app.detail.cursor > c, "wheel moves the detail cursor");
    // A click on an app lane selects an event of that app near that time.
    screen(&mut app, 120, 40);
    let (y, _) = *app
        .hits
        .lanes
        .iter()
        .find(|(_, l)| matches!(l, pm2_trace::views::tui::app::LaneRef::Gen { gi: 3, .. }))
        .expect("lane of generation 3");
    let plot = app.hits.plot;
    // Find the spawn marker of that lane on screen and click it.
    let s = screen(&mut app, 120, 40);
    let line: Vec<char> = s.lines().nth(y as usize).unwrap().chars().collect();
    let x = (plot.x as usize..(plot.x + plot.width) as usize)
        .find(|&x| line.get(x + 1) == Some(&'S'))
        .expect("a spawn marker on the lane") as u16;
    mouse(&mut app, MouseEventKind::Down(MouseButton::Left), x, y);
    assert_eq!(app.focus, Pane::Timeline);
    let r = app.model.row(app.sel);
    assert_eq!(
        app.model.app_label(r.app).as_deref(),
        Some("web:0"),
        "{}",
        app.model.text(app.sel)
    );
    // The wheel over the timeline scrolls its lanes.
    let top = app.lane_top;
    mouse(&mut app, MouseEventKind::ScrollDown, plot.x + 2, y);
    assert_eq!(app.lane_top, top + 1);
}

/// The detail pane re-reads events by offset (`CaptureReader::seek`): every event comes
/// back identical, in any order.
#[test]
fn events_reread_by_offset_are_identical() {
    use pm2_trace::capture::CaptureReader;
    let path = capture("crash-loop-5.4.3.bin");
    let mut r = CaptureReader::open(&path).unwrap();
    let mut all = Vec::new();
    loop {
        let off = r.offset();
        match r.next() {
            Some(ev) => all.push((off, ev.unwrap())),
            None => break,
        }
    }
    let mut again = CaptureReader::open(&path).unwrap();
    for k in (0..all.len()).rev().step_by(7).chain([0, all.len() / 2]) {
        let (off, ev) = &all[k];
        again.seek(*off).unwrap();
        assert_eq!(
            again.next().unwrap().unwrap(),
            *ev,
            "event {k} at byte {off}"
        );
    }
}

/// A cluster reload of a release that crashes at start (pm2 7.0.4, captures/): lanes per
/// instance, the outgoing worker (generation #0, running since before the capture) drawn
/// until pm2 stopped it (`i`) while the new workers crash beside it, and the reload's
/// finding first.
#[test]
fn cluster_reload_lanes() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("captures/reload-crash-cluster-7.0.4.bin");
    let m = Model::load(&path).expect("capture");
    assert_eq!(m.findings[0].kind, "reload-without-ready");
    let mut app = App::new(m, false);
    let s = screen(&mut app, 160, 48);
    assert!(s.contains("E web reload-without-ready"), "{s}");
    let lane = |who: &str| {
        s.lines()
            .find(|l| l.contains(&format!("{who} #0")))
            .unwrap_or_else(|| panic!("no lane for {who}'s old worker: {s}"))
            .to_owned()
    };
    for who in ["web:0", "web:1"] {
        let l = lane(who);
        assert!(l.contains('━') && l.contains('S'), "{l}");
    }
    assert!(lane("web:1").contains('i'), "the old worker's stop: {s}");
}
