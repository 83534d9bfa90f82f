//! The state of the view and what each key and mouse action does to it.

use super::doc::Doc;
use super::model::{Loader, Model, Row};
use super::{detail, search};
use crate::event::{MonoNs, Source};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

/// The panes, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Findings,
    Timeline,
    Events,
    Detail,
}

impl Pane {
    fn next(self) -> Pane {
        match self {
            Pane::Findings => Pane::Timeline,
            Pane::Timeline => Pane::Events,
            Pane::Events => Pane::Detail,
            Pane::Detail => Pane::Findings,
        }
    }
    fn prev(self) -> Pane {
        match self {
            Pane::Findings => Pane::Detail,
            Pane::Timeline => Pane::Findings,
            Pane::Events => Pane::Timeline,
            Pane::Detail => Pane::Events,
        }
    }
}

/// What the detail pane shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DetailOf {
    Finding,
    Row,
}

/// The state of a live recording, for the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LiveState {
    Recording,
    Stopping,
    Ended(String),
}

/// One lane of the timeline, as last drawn (for mouse clicks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneRef {
    Requests,
    Daemon,
    Gen { pm_id: u64, gi: usize },
}

/// Where things were drawn, for the mouse.
#[derive(Debug, Default, Clone)]
pub struct Hits {
    pub findings: Rect,
    pub(crate) timeline: Rect,
    pub plot: Rect,
    pub(crate) scale_y: u16,
    pub lanes: Vec<(u16, LaneRef)>,
    pub events: Rect,
    pub detail: Rect,
    pub(crate) detail_body: Rect,
}

/// Sources in the order of the `1`..`4` filter keys.
pub(crate) const SOURCE_KEYS: [Source; 4] =
    [Source::Rpc, Source::Bus, Source::Proc, Source::Recorder];

/// The whole view state.
pub struct App {
    pub model: Model,
    pub(crate) loader: Option<Loader>,
    pub(crate) live: Option<LiveState>,
    pub focus: Pane,
    pub(crate) detail_of: DetailOf,
    pub(crate) color: bool,
    pub(crate) wall: bool,
    /// Selected row (absolute index).
    pub sel: usize,
    /// First position shown in the event list.
    pub list_top: usize,
    visible: Option<Vec<u32>>,
    vis_upto: usize,
    pub(crate) filter_app: Option<u32>,
    /// Shown sources, indexed like [`SOURCE_KEYS`].
    pub(crate) sources: [bool; 4],
    pub fsel: usize,
    pub(crate) ftop: usize,
    /// Rows the selected finding rests on (sorted).
    pub evidence: Vec<u32>,
    /// Left edge of the timeline (ns) and its scale (ns per column).
    pub t0: f64,
    pub scale: f64,
    pub(crate) plot_w: u16,
    fitted: bool,
    pub lane_top: usize,
    pub detail: Doc,
    detail_key: Option<(DetailOf, usize, u16, bool, u64)>,
    pub detail_h: u16,
    pub detail_w: u16,
    pub(crate) search: Option<String>,
    pub(crate) last_search: String,
    pub(crate) help: bool,
    pub(crate) help_scroll: u16,
    pub(crate) follow: bool,
    /// A finding was jumped to (the first `n` goes to the first finding).
    pub(crate) fjumped: bool,
    pub(crate) quit: bool,
    pub(crate) message: Option<String>,
    pub(crate) list_h: u16,
    pub hits: Hits,
}

const MIN_SCALE: f64 = 1_000.0;

impl App {
    pub fn new(model: Model, color: bool) -> App {
        let mut a = App {
            model,
            loader: None,
            live: None,
            focus: Pane::Events,
            detail_of: DetailOf::Row,
            color,
            wall: false,
            sel: 0,
            list_top: 0,
            visible: None,
            vis_upto: 0,
            filter_app: None,
            sources: [true; 4],
            fsel: 0,
            ftop: 0,
            evidence: Vec::new(),
            t0: 0.0,
            scale: 1e6,
            plot_w: 60,
            fitted: false,
            lane_top: 0,
            detail: Doc::new(),
            detail_key: None,
            detail_h: 10,
            detail_w: 40,
            search: None,
            last_search: String::new(),
            help: false,
            help_scroll: 0,
            follow: false,
            fjumped: false,
            quit: false,
            message: None,
            list_h: 10,
            hits: Hits::default(),
        };
        a.sync();
        a
    }

    /// The view of a capture that `loader` is still reading (see [`Model::open`]).
    pub fn loading(model: Model, loader: Loader, color: bool) -> App {
        let mut a = App::new(model, color);
        a.loader = Some(loader);
        a
    }

    /// One turn of a loading capture: take what the loader produced for at most
    /// [`super::LOAD_PUMP`]. True once it has all been read (and the findings made); the
    /// view is then [`App::loaded`]. False also when nothing is loading.
    pub fn pump_loader(&mut self) -> bool {
        let Some(loader) = self.loader.as_mut() else {
            return false;
        };
        let done = self.model.pump(loader, super::LOAD_PUMP);
        if done {
            self.loader = None;
            self.loaded();
        }
        done
    }

    /// The whole capture is read: show all of it (unless the user moved meanwhile).
    pub fn loaded(&mut self) {
        if !self.fitted {
            self.fit_all();
        }
        self.fitted = true;
        self.sync();
    }

    /// Whether a filter hides some rows.
    pub(crate) fn filtered(&self) -> bool {
        self.filter_app.is_some() || self.sources.iter().any(|s| !s)
    }

    pub(crate) fn source_shown(&self, s: Source) -> bool {
        SOURCE_KEYS
            .iter()
            .position(|k| *k == s)
            .is_none_or(|i| self.sources[i])
    }

    /// Whether a row passes the filters.
    pub(crate) fn row_shown(&self, r: &Row) -> bool {
        self.source_shown(r.source) && self.filter_app.is_none_or(|a| r.app == a)
    }

    /// Rows in the event list.
    pub(crate) fn vis_len(&self) -> usize {
        match &self.visible {
            Some(v) => v.len(),
            None => self.model.len(),
        }
    }

    /// The row at list position `p`.
    pub(crate) fn vis_row(&self, p: usize) -> usize {
        match &self.visible {
            Some(v) => v[p] as usize,
            None => p,
        }
    }

    /// The list position of row `r`, or of the first shown row after it.
    pub(crate) fn vis_pos(&self, r: usize) -> usize {
        match &self.visible {
            Some(v) => v.partition_point(|&x| (x as usize) < r),
            None => r,
        }
    }

    fn rebuild_visible(&mut self) {
        if self.filtered() {
            let v: Vec<u32> = (0..self.model.len())
                .filter(|&i| self.row_shown(self.model.row(i)))
                .map(|i| i as u32)
                .collect();
            self.visible = Some(v);
        } else {
            self.visible = None;
        }
        self.vis_upto = self.model.len();
        self.snap_selection();
    }

    /// Move the selection onto a shown row (the first at or after it, else the last).
    fn snap_selection(&mut self) {
        let n = self.vis_len();
        if n == 0 {
            return;
        }
        let p = self.vis_pos(self.sel).min(n - 1);
        self.sel = self.vis_row(p);
    }

    /// Bring derived state up to date with the model (after rows arrive or anything moves).
    pub(crate) fn sync(&mut self) {
        let len = self.model.len();
        if self.vis_upto < len {
            if self.visible.is_some() {
                let new: Vec<u32> = (self.vis_upto..len)
                    .filter(|&i| self.row_shown(self.model.row(i)))
                    .map(|i| i as u32)
                    .collect();
                if let Some(v) = self.visible.as_mut() {
                    v.extend(new);
                }
            }
            self.vis_upto = len;
            if self.follow {
                let n = self.vis_len();
                if n > 0 {
                    self.sel = self.vis_row(n - 1);
                }
            }
        }
        if len == 0 {
            self.t0 = self.model.info.mono_ref_ns as f64;
        }
        if len > 0 {
            if self.live.is_some() {
                if self.follow {
                    self.follow_window();
                }
            } else if !self.fitted {
                // While a file loads, show all of what is read (until the user moves).
                self.fit_all();
                self.fitted = self.loader.is_none();
            }
        }
        if self.fsel >= self.model.findings.len() {
            self.fsel = self.model.findings.len().saturating_sub(1);
        }
        self.evidence = match self.model.findings.get(self.fsel) {
            Some(f) => {
                let mut v: Vec<u32> = f
                    .evidence
                    .iter()
                    .filter_map(|e| self.model.find_evidence(e.t, e.source, &e.what))
                    .map(|i| i as u32)
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            }
            None => Vec::new(),
        };
        self.keep_list_visible();
        self.refresh_detail();
    }

    fn keep_list_visible(&mut self) {
        let h = self.list_h.max(1) as usize;
        let n = self.vis_len();
        if n == 0 {
            self.list_top = 0;
            return;
        }
        let p = self.vis_pos(self.sel).min(n - 1);
        if p < self.list_top {
            self.list_top = p;
        } else if p >= self.list_top + h {
            self.list_top = p + 1 - h;
        }
        self.list_top = self.list_top.min(n.saturating_sub(h));
        let fh = self.hits.findings.height.saturating_sub(2).max(1) as usize;
        if self.fsel < self.ftop {
            self.ftop = self.fsel;
        } else if self.fsel >= self.ftop + fh {
            self.ftop = self.fsel + 1 - fh;
        }
    }

    /// Rebuild the detail document if what it shows changed.
    pub(crate) fn refresh_detail(&mut self) {
        let (what, index) = match self.detail_of {
            DetailOf::Finding if !self.model.findings.is_empty() => (DetailOf::Finding, self.fsel),
            _ => (DetailOf::Row, self.sel),
        };
        let version = match what {
            DetailOf::Finding => self.model.findings.len() as u64,
            // A request's reply may arrive later (live): rebuild when the pair changes.
            DetailOf::Row => {
                if self.model.is_empty() {
                    0
                } else {
                    self.model.row(index.min(self.model.len() - 1)).pair as u64
                }
            }
        };
        let key = (what, index, self.detail_w, self.wall, version);
        if self.detail_key == Some(key) {
            return;
        }
        let width = self.detail_w.max(20) as usize;
        self.detail = match what {
            DetailOf::Finding => match self.model.findings.get(index) {
                Some(f) => detail::finding_doc(&self.model, f, width, self.wall),
                None => Doc::new(),
            },
            DetailOf::Row => {
                if self.model.is_empty() {
                    let mut d = Doc::new();
                    d.line("no events yet", super::doc::Cls::Dim);
                    d
                } else {
                    detail::row_doc(&mut self.model, index, width, self.wall)
                }
            }
        };
        self.detail_key = Some(key);
    }

    // ---- time window ----

    pub(crate) fn t1(&self) -> f64 {
        self.t0 + self.scale * self.plot_w.max(1) as f64
    }

    /// Fit the whole capture in the timeline.
    pub(crate) fn fit_all(&mut self) {
        if let Some((a, b)) = self.model.span() {
            self.fit(a, b, 0.02);
        }
    }

    fn fit(&mut self, a: MonoNs, b: MonoNs, margin: f64) {
        let w = self.plot_w.max(2) as f64;
        let span = (b.saturating_sub(a) as f64).max(MIN_SCALE * w);
        let total = span * (1.0 + 2.0 * margin);
        self.scale = (total / w).max(MIN_SCALE);
        self.t0 = a as f64 - (self.scale * w - (b - a.min(b)) as f64) / 2.0;
    }

    /// Following a live recording: all of it, or its last five minutes.
    fn follow_window(&mut self) {
        let Some((a, b)) = self.model.span() else {
            return;
        };
        const LAST: u64 = 300_000_000_000;
        if b - a <= LAST {
            self.fit(a, b, 0.02);
        } else {
            let w = self.plot_w.max(2) as f64;
            self.scale = LAST as f64 / w;
            self.t0 = b as f64 - self.scale * w * 0.97;
        }
    }

    /// The user moved the window: stop fitting and following.
    fn moved(&mut self) {
        self.fitted = true;
        self.follow = false;
    }

    /// Make sure `t` is in the window (recentre if not; with `end`, put it near the right).
    fn show_time(&mut self, t: MonoNs, end: bool) {
        let t = t as f64;
        let w = self.scale * self.plot_w.max(1) as f64;
        if t < self.t0 || t > self.t0 + w {
            self.t0 = if end { t - w * 0.9 } else { t - w / 2.0 };
            self.fitted = true;
        }
    }

    /// Zoom by `factor` (< 1 zooms in) around the selection if it is shown, else the middle.
    pub(crate) fn zoom(&mut self, factor: f64) {
        let w = self.plot_w.max(1) as f64;
        let anchor = if !self.model.is_empty() {
            let t = self.model.row(self.sel).t as f64;
            if t >= self.t0 && t <= self.t1() {
                t
            } else {
                self.t0 + self.scale * w / 2.0
            }
        } else {
            self.t0 + self.scale * w / 2.0
        };
        let col = (anchor - self.t0) / self.scale;
        let max_scale = self.model.span().map_or(1e12, |(a, b)| {
            ((b - a) as f64 * 4.0 / w).max(MIN_SCALE * 4.0)
        });
        self.scale = (self.scale * factor).clamp(MIN_SCALE, max_scale);
        self.t0 = anchor - col * self.scale;
        self.moved();
    }

    /// Pan by a fraction of the window.
    pub(crate) fn pan(&mut self, frac: f64) {
        self.t0 += self.scale * self.plot_w.max(1) as f64 * frac;
        self.moved();
    }

    // ---- selection ----

    /// Select list position `p` (clamped).
    pub(crate) fn select_pos(&mut self, p: isize) {
        let n = self.vis_len();
        if n == 0 {
            return;
        }
        let p = p.clamp(0, n as isize - 1) as usize;
        self.sel = self.vis_row(p);
        if self.live.is_some() {
            self.follow = p == n - 1;
        }
        let t = self.model.row(self.sel).t;
        self.show_time(t, false);
    }

    /// Select row `r`, showing it.
    pub(crate) fn select_row(&mut self, r: usize) {
        if r >= self.model.len() {
            return;
        }
        if !self.row_shown(self.model.row(r)) {
            // Evidence or a search hit hidden by a filter: clear the filters to show it.
            self.filter_app = None;
            self.sources = [true; 4];
            self.rebuild_visible();
            self.message = Some("filters cleared to show the selection".into());
        }
        self.sel = r;
        self.follow = false;
        let t = self.model.row(r).t;
        self.show_time(t, false);
    }

    fn move_sel(&mut self, d: isize) {
        let p = self.vis_pos(self.sel) as isize;
        self.select_pos(p + d);
    }

    /// Select finding `i` and jump the timeline and the list to its evidence.
    pub(crate) fn select_finding(&mut self, i: usize) {
        let n = self.model.findings.len();
        if n == 0 {
            self.message = Some("no findings".into());
            return;
        }
        self.fsel = i.min(n - 1);
        self.fjumped = true;
        self.sync();
        let f = &self.model.findings[self.fsel];
        let ts: Vec<MonoNs> = f.evidence.iter().map(|e| e.t).collect();
        if let (Some(&a), Some(&b)) = (ts.iter().min(), ts.iter().max()) {
            let w = self.plot_w.max(2) as f64;
            let span = (b - a) as f64;
            let min_span = 20.0 * MIN_SCALE * w;
            let total = span.max(min_span) * 1.3;
            self.scale = (total / w).max(MIN_SCALE);
            self.t0 = (a as f64 + b as f64) / 2.0 - total / 2.0;
            self.moved();
        }
        if let Some(&r) = self.evidence.first() {
            if !self.row_shown(self.model.row(r as usize)) {
                self.select_row(r as usize);
            }
            self.sel = r as usize;
            self.follow = false;
        }
        self.lane_top = 0;
    }

    fn next_finding(&mut self, d: isize) {
        let n = self.model.findings.len();
        if n == 0 {
            self.message = Some("no findings".into());
            return;
        }
        let i = if self.fjumped {
            (self.fsel as isize + d).rem_euclid(n as isize) as usize
        } else if d > 0 {
            0
        } else {
            n - 1
        };
        self.select_finding(i);
        if self.focus == Pane::Detail {
            self.detail_of = DetailOf::Finding;
        }
    }

    // ---- filters ----

    fn cycle_app(&mut self) {
        let n = self.model.apps.len() as u32;
        self.filter_app = match self.filter_app {
            None if n > 0 => Some(0),
            Some(a) if a + 1 < n => Some(a + 1),
            _ => None,
        };
        self.lane_top = 0;
        self.rebuild_visible();
    }

    fn toggle_source(&mut self, k: usize) {
        self.sources[k] = !self.sources[k];
        if self.sources.iter().all(|s| !s) {
            self.sources = [true; 4];
        }
        self.rebuild_visible();
    }

    /// The app filter in words.
    pub(crate) fn app_filter_label(&self) -> String {
        match self.filter_app {
            None => "all apps".into(),
            Some(a) => self
                .model
                .app_label(a)
                .unwrap_or_else(|| format!("app {a}")),
        }
    }

    // ---- search ----

    fn run_search(&mut self, forward: bool) {
        if self.last_search.is_empty() {
            self.message = Some("no search yet: press / and type".into());
            return;
        }
        let n = self.vis_len();
        if n == 0 {
            return;
        }
        let start = self.vis_pos(self.sel);
        let q = self.last_search.clone();
        match search::find(self, &q, start, forward) {
            Some(p) => {
                let wrapped = if forward { p <= start } else { p >= start };
                self.select_pos(p as isize);
                // The match is an event: show it (the timeline keeps its focus).
                if self.focus != Pane::Timeline {
                    self.set_focus(Pane::Events);
                }
                self.message = Some(if wrapped {
                    format!("/{q}: search wrapped")
                } else {
                    format!("/{q}")
                });
            }
            None => self.message = Some(format!("/{q}: not found")),
        }
    }

    // ---- input ----

    /// One key press.
    pub fn key(&mut self, k: KeyEvent) {
        if k.kind == KeyEventKind::Release {
            return;
        }
        self.message = None;
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(k.code, KeyCode::Char('c')) {
            self.quit = true;
            return;
        }
        if let Some(q) = self.search.as_mut() {
            match k.code {
                KeyCode::Esc => self.search = None,
                KeyCode::Enter => {
                    let q = self.search.take().unwrap_or_default();
                    if !q.is_empty() {
                        self.last_search = q;
                    }
                    self.run_search(true);
                }
                KeyCode::Backspace => {
                    q.pop();
                }
                KeyCode::Char(c) if !ctrl => q.push(c),
                _ => {}
            }
            self.sync();
            return;
        }
        if self.help {
            match k.code {
                KeyCode::Char('j') | KeyCode::Down => self.help_scroll += 1,
                KeyCode::Char('k') | KeyCode::Up => {
                    self.help_scroll = self.help_scroll.saturating_sub(1)
                }
                KeyCode::Char('q') => self.quit = true,
                _ => self.help = false,
            }
            return;
        }
        let page = |h: u16| (h.max(2) - 1) as isize;
        match k.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => {
                self.help = true;
                self.help_scroll = 0;
            }
            KeyCode::Tab => self.set_focus(self.focus.next()),
            KeyCode::BackTab => self.set_focus(self.focus.prev()),
            KeyCode::Char('/') => self.search = Some(String::new()),
            KeyCode::Char('.') => self.run_search(true),
            KeyCode::Char(',') => self.run_search(false),
            KeyCode::Char('n') => self.next_finding(1),
            KeyCode::Char('N') => self.next_finding(-1),
            KeyCode::Char('+') | KeyCode::Char('=') => self.zoom(0.5),
            KeyCode::Char('-') | KeyCode::Char('_') => self.zoom(2.0),
            KeyCode::Char('0') => {
                self.fit_all();
                self.moved();
            }
            KeyCode::Char('t') => self.wall = !self.wall,
            KeyCode::Char('a') => self.cycle_app(),
            KeyCode::Char(c @ '1'..='4') => self.toggle_source(c as usize - '1' as usize),
            KeyCode::Char('x') => {
                self.filter_app = None;
                self.sources = [true; 4];
                self.rebuild_visible();
            }
            KeyCode::Char('f') if self.live.is_some() => {
                self.follow = !self.follow;
                if self.follow {
                    let n = self.vis_len();
                    if n > 0 {
                        self.sel = self.vis_row(n - 1);
                        self.show_time(self.model.row(self.sel).t, true);
                    }
                }
            }
            KeyCode::Esc => {
                if self.focus == Pane::Detail {
                    self.set_focus(match self.detail_of {
                        DetailOf::Finding => Pane::Findings,
                        DetailOf::Row => Pane::Events,
                    });
                }
            }
            KeyCode::Enter if self.focus != Pane::Detail => {
                self.set_focus(Pane::Detail);
            }
            _ => match self.focus {
                Pane::Events => match k.code {
                    KeyCode::Down | KeyCode::Char('j') => self.move_sel(1),
                    KeyCode::Up | KeyCode::Char('k') => self.move_sel(-1),
                    KeyCode::PageDown => self.move_sel(page(self.list_h)),
                    KeyCode::PageUp => self.move_sel(-page(self.list_h)),
                    KeyCode::Home | KeyCode::Char('g') => self.select_pos(0),
                    KeyCode::End | KeyCode::Char('G') => self.select_pos(isize::MAX),
                    KeyCode::Left | KeyCode::Char('h') => self.pan(-0.1),
                    KeyCode::Right | KeyCode::Char('l') => self.pan(0.1),
                    _ => {}
                },
                Pane::Findings => match k.code {
                    KeyCode::Down | KeyCode::Char('j') => self.next_finding_clamped(1),
                    KeyCode::Up | KeyCode::Char('k') => self.next_finding_clamped(-1),
                    KeyCode::Home | KeyCode::Char('g') => self.select_finding(0),
                    KeyCode::End | KeyCode::Char('G') => self.select_finding(usize::MAX),
                    KeyCode::Left | KeyCode::Char('h') => self.pan(-0.1),
                    KeyCode::Right | KeyCode::Char('l') => self.pan(0.1),
                    _ => {}
                },
                Pane::Timeline => match k.code {
                    KeyCode::Left | KeyCode::Char('h') => self.pan(-0.1),
                    KeyCode::Right | KeyCode::Char('l') => self.pan(0.1),
                    KeyCode::Char('H') => self.pan(-0.5),
                    KeyCode::Char('L') => self.pan(0.5),
                    KeyCode::Down | KeyCode::Char('j') => self.lane_top += 1,
                    KeyCode::Up | KeyCode::Char('k') => {
                        self.lane_top = self.lane_top.saturating_sub(1)
                    }
                    KeyCode::Char('[') => self.step_in_window(-1),
                    KeyCode::Char(']') => self.step_in_window(1),
                    _ => {}
                },
                Pane::Detail => {
                    let h = self.detail_h;
                    match k.code {
                        KeyCode::Down | KeyCode::Char('j') => self.detail.move_by(1),
                        KeyCode::Up | KeyCode::Char('k') => self.detail.move_by(-1),
                        KeyCode::PageDown => self.detail.move_by(page(h)),
                        KeyCode::PageUp => self.detail.move_by(-page(h)),
                        KeyCode::Home | KeyCode::Char('g') => self.detail.cursor = 0,
                        KeyCode::End | KeyCode::Char('G') => self.detail.move_by(isize::MAX / 2),
                        KeyCode::Enter => match self.detail.link_at_cursor() {
                            // An evidence line: go to its event.
                            Some(r) => {
                                self.select_row(r);
                                self.set_focus(Pane::Events);
                                self.sync();
                                return;
                            }
                            None => self.detail.toggle(),
                        },
                        KeyCode::Char(' ') => self.detail.toggle(),
                        KeyCode::Left | KeyCode::Char('h') => self.detail.fold(),
                        KeyCode::Right | KeyCode::Char('l') => self.detail.unfold(),
                        KeyCode::Char('e') => self.detail.expand_all(),
                        KeyCode::Char('c') => self.detail.collapse_all(),
                        KeyCode::Char('>') => self.detail.hscroll += 8,
                        KeyCode::Char('<') => {
                            self.detail.hscroll = self.detail.hscroll.saturating_sub(8)
                        }
                        _ => {}
                    }
                    self.detail.follow(h as usize);
                    return;
                }
            },
        }
        self.sync();
        self.detail.follow(self.detail_h as usize);
    }

    fn next_finding_clamped(&mut self, d: isize) {
        let n = self.model.findings.len();
        if n == 0 {
            self.message = Some("no findings".into());
            return;
        }
        let i = (self.fsel as isize + d).clamp(0, n as isize - 1) as usize;
        if i != self.fsel {
            self.select_finding(i);
        }
    }

    /// Select the previous/next shown row whose time is in the window (from the selection).
    fn step_in_window(&mut self, d: isize) {
        let p = self.vis_pos(self.sel) as isize + d;
        if p < 0 || p >= self.vis_len() as isize {
            return;
        }
        let r = self.vis_row(p as usize);
        self.sel = r;
        self.follow = false;
        self.show_time(self.model.row(r).t, false);
    }

    pub fn set_focus(&mut self, p: Pane) {
        self.focus = p;
        match p {
            Pane::Findings => self.detail_of = DetailOf::Finding,
            Pane::Events | Pane::Timeline => self.detail_of = DetailOf::Row,
            Pane::Detail => {}
        }
        self.sync();
    }

    /// One mouse action.
    pub fn mouse(&mut self, m: MouseEvent) {
        let at = Position::new(m.column, m.row);
        let over = |r: Rect| r.contains(at);
        let h = &self.hits;
        let pane = if over(h.timeline) {
            Some(Pane::Timeline)
        } else if over(h.events) {
            Some(Pane::Events)
        } else if over(h.findings) {
            Some(Pane::Findings)
        } else if over(h.detail) {
            Some(Pane::Detail)
        } else {
            None
        };
        let Some(pane) = pane else { return };
        if self.help {
            self.help = false;
            return;
        }
        let ctrl = m.modifiers.contains(KeyModifiers::CONTROL);
        let shift = m.modifiers.contains(KeyModifiers::SHIFT);
        match m.kind {
            MouseEventKind::ScrollDown | MouseEventKind::ScrollUp => {
                let d: isize = if m.kind == MouseEventKind::ScrollDown {
                    1
                } else {
                    -1
                };
                match pane {
                    Pane::Events => self.move_sel(3 * d),
                    Pane::Findings => self.next_finding_clamped(d),
                    Pane::Detail => {
                        self.detail.move_by(3 * d);
                        self.detail.follow(self.detail_h as usize);
                    }
                    Pane::Timeline if ctrl => self.zoom(if d > 0 { 2.0 } else { 0.5 }),
                    Pane::Timeline if shift => self.pan(0.1 * d as f64),
                    Pane::Timeline => {
                        self.lane_top = (self.lane_top as isize + d).max(0) as usize;
                    }
                }
            }
            MouseEventKind::ScrollLeft => self.pan(-0.1),
            MouseEventKind::ScrollRight => self.pan(0.1),
            MouseEventKind::Down(_) => {
                if self.focus != pane {
                    self.set_focus(pane);
                }
                match pane {
                    Pane::Events => {
                        let y = m.row.saturating_sub(self.hits.events.y + 1) as usize;
                        let p = self.list_top + y;
                        if p < self.vis_len() && m.row > self.hits.events.y {
                            self.select_pos(p as isize);
                        }
                    }
                    Pane::Findings => {
                        let y = m.row.saturating_sub(self.hits.findings.y + 1) as usize;
                        let i = self.ftop + y;
                        if i < self.model.findings.len() && m.row > self.hits.findings.y {
                            self.select_finding(i);
                            self.detail_of = DetailOf::Finding;
                        }
                    }
                    Pane::Detail => {
                        let b = self.hits.detail_body;
                        if b.contains(at) {
                            let line = self.detail.scroll + (m.row - b.y) as usize;
                            if line < self.detail.len() {
                                let was = self.detail.cursor == line;
                                self.detail.cursor = line;
                                if was {
                                    match self.detail.link_at_cursor() {
                                        Some(r) => {
                                            self.select_row(r);
                                            self.set_focus(Pane::Events);
                                        }
                                        None => self.detail.toggle(),
                                    }
                                }
                            }
                        }
                    }
                    Pane::Timeline => self.click_timeline(at),
                }
            }
            _ => return,
        }
        self.sync();
    }

    fn click_timeline(&mut self, at: Position) {
        let plot = self.hits.plot;
        if at.x < plot.x || at.x >= plot.x + plot.width {
            return;
        }
        let t = self.t0 + (at.x - plot.x) as f64 * self.scale + self.scale / 2.0;
        if at.y == self.hits.scale_y {
            // Centre the window there.
            self.t0 = t - self.scale * self.plot_w as f64 / 2.0;
            return;
        }
        let lane = self
            .hits
            .lanes
            .iter()
            .find(|(y, _)| *y == at.y)
            .map(|(_, l)| *l);
        let Some(lane) = lane else { return };
        let slack = self.scale * 2.0;
        let want = |app: &App, r: &Row| -> bool {
            if !app.row_shown(r) {
                return false;
            }
            match lane {
                LaneRef::Requests => matches!(r.kind, super::model::RowKind::Ask),
                LaneRef::Daemon => matches!(r.kind, super::model::RowKind::Daemon),
                LaneRef::Gen { pm_id, .. } => {
                    app.model.app_index_of(pm_id).is_some_and(|a| r.app == a)
                }
            }
        };
        // The nearest matching row within a few columns.
        let lo = self.model.lower_bound((t - slack).max(0.0) as MonoNs);
        let hi = self.model.lower_bound((t + slack).max(0.0) as MonoNs);
        let mut best: Option<(f64, usize)> = None;
        for i in lo..hi.min(lo + 100_000) {
            let r = self.model.row(i);
            if want(self, r) {
                let d = (r.t as f64 - t).abs();
                if best.is_none_or(|(bd, _)| d < bd) {
                    best = Some((d, i));
                }
            }
        }
        if let Some((_, i)) = best {
            self.select_row(i);
        } else if let LaneRef::Requests = lane {
            // A click inside a long span: its request.
            let tt = t as MonoNs;
            let hit = self
                .model
                .timeline
                .requests
                .iter()
                .rev()
                .find(|r| r.asked <= tt && r.answered.is_none_or(|a| tt <= a));
            if let Some(req) = hit {
                let i = self.model.lower_bound(req.asked);
                let found = (i..self.model.len().min(i + 64))
                    .find(|&j| self.model.row(j).kind == super::model::RowKind::Ask);
                if let Some(j) = found {
                    self.select_row(j);
                }
            }
        }
    }

    /// Whether row `r` is evidence of the selected finding.
    pub(crate) fn is_evidence(&self, r: usize) -> bool {
        self.evidence.binary_search(&(r as u32)).is_ok()
    }
}
