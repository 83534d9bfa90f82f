//! Drawing: the layout, the timeline with its lanes and scale, the lists, the detail pane,
//! the status line and the help overlay. Only what is on screen is looked at: the lists
//! draw their visible rows, the daemon lane reads the rows inside the window (found by
//! binary search), the app lanes only the generations that overlap it.

use super::app::{App, DetailOf, LaneRef, LiveState, Pane, SOURCE_KEYS};
use super::doc::Cls;
use super::model::{Mark, RowKind, NONE};
use super::util::{fit, fmt_span, fmt_time, fmt_time_f};
use crate::rules::Severity;
use crate::timeline::{Generation, Tone};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph};
use ratatui::Frame;
use std::borrow::Cow;

/// The smallest terminal drawn normally.
pub(crate) const MIN_W: u16 = 60;
pub(crate) const MIN_H: u16 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Plain,
    Dim,
    Good,
    Warn,
    Bad,
    Req,
    Spawn,
    Evidence,
    Cursor,
    Sel,
    Focus,
    Key,
    Head,
    Str,
    Num,
}

fn style(color: bool, r: Role) -> Style {
    let s = Style::default();
    if !color {
        return match r {
            Role::Evidence | Role::Sel => s.add_modifier(Modifier::REVERSED),
            Role::Bad | Role::Focus | Role::Head | Role::Key => s.add_modifier(Modifier::BOLD),
            _ => s,
        };
    }
    match r {
        Role::Plain => s,
        Role::Dim | Role::Cursor => s.fg(Color::DarkGray),
        Role::Good => s.fg(Color::Green),
        Role::Warn => s.fg(Color::Yellow),
        Role::Bad => s.fg(Color::Red).add_modifier(Modifier::BOLD),
        Role::Req => s.fg(Color::Cyan),
        Role::Spawn => s.fg(Color::Blue),
        Role::Evidence => s
            .fg(Color::Black)
            .bg(Color::Yellow)
            .add_modifier(Modifier::BOLD),
        Role::Sel => s.add_modifier(Modifier::REVERSED),
        Role::Focus => s.fg(Color::Cyan).add_modifier(Modifier::BOLD),
        Role::Key => s.fg(Color::Cyan).add_modifier(Modifier::BOLD),
        Role::Head => s.add_modifier(Modifier::BOLD),
        Role::Str => s.fg(Color::Green),
        Role::Num => s.fg(Color::Magenta),
    }
}

fn tone_role(t: Tone) -> Role {
    match t {
        Tone::Plain => Role::Plain,
        Tone::Quiet => Role::Dim,
        Tone::Good => Role::Good,
        Tone::Warn => Role::Warn,
        Tone::Bad => Role::Bad,
    }
}

fn cls_role(c: Cls) -> Role {
    match c {
        Cls::Plain | Cls::Punct => Role::Plain,
        Cls::Head => Role::Head,
        Cls::Dim => Role::Dim,
        Cls::Key => Role::Req,
        Cls::Str => Role::Str,
        Cls::Num | Cls::Lit => Role::Num,
        Cls::Good => Role::Good,
        Cls::Warn => Role::Warn,
        Cls::Bad => Role::Bad,
        Cls::Mark => Role::Evidence,
    }
}

/// The screen split into panes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Areas {
    pub(crate) timeline: Rect,
    pub(crate) findings: Rect,
    pub(crate) events: Rect,
    pub(crate) detail: Rect,
    pub(crate) status: Rect,
}

/// Where the panes go for a screen of `area` with `findings` findings and at most `lanes`
/// timeline lanes.
pub(crate) fn layout(area: Rect, findings: usize, lanes: usize) -> Areas {
    let status = Rect::new(area.x, area.y + area.height - 1, area.width, 1);
    let main_h = area.height - 1;
    let th = (main_h * 2 / 5)
        .clamp(7, 22)
        .min((lanes as u16).saturating_add(3).max(7));
    let timeline = Rect::new(area.x, area.y, area.width, th);
    let bh = main_h - th;
    let by = area.y + th;
    let lw = area.width * 55 / 100;
    let fh = (findings as u16 + 2).clamp(3, (bh / 3).max(3));
    let findings = Rect::new(area.x, by, lw, fh);
    let events = Rect::new(area.x, by + fh, lw, bh - fh);
    let detail = Rect::new(area.x + lw, by, area.width - lw, bh);
    Areas {
        timeline,
        findings,
        events,
        detail,
        status,
    }
}

fn pane_block<'a>(app: &App, pane: Pane, title: Vec<Span<'a>>) -> Block<'a> {
    let focused = app.focus == pane;
    let mut spans = vec![Span::raw(" ")];
    spans.extend(title);
    spans.push(Span::raw(" "));
    let b = Block::bordered().title(Line::from(spans));
    if focused {
        b.border_type(BorderType::Thick)
            .border_style(style(app.color, Role::Focus))
    } else {
        b.border_style(style(app.color, Role::Dim))
    }
}

/// Draw the whole screen.
pub fn draw(f: &mut Frame, app: &mut App) {
    let area = f.area();
    if area.width < MIN_W || area.height < MIN_H {
        let msg = format!(
            "pm2-trace: the terminal is {}x{}; make it at least {MIN_W}x{MIN_H} (q quits)",
            area.width, area.height
        );
        f.render_widget(
            Paragraph::new(msg).wrap(ratatui::widgets::Wrap { trim: true }),
            area,
        );
        return;
    }
    let gens: usize = app
        .model
        .timeline
        .apps
        .values()
        .map(|a| a.generations.len())
        .sum();
    let a = layout(area, app.model.findings.len(), gens + 2);
    // Dimensions the state depends on.
    let label_w = label_width(a.timeline.width.saturating_sub(2));
    let plot_w = a.timeline.width.saturating_sub(2 + label_w + 1).max(1);
    if plot_w != app.plot_w {
        let t1 = app.t1();
        app.plot_w = plot_w;
        app.scale = ((t1 - app.t0) / plot_w as f64).max(1.0);
    }
    app.list_h = a.events.height.saturating_sub(2);
    app.detail_h = a.detail.height.saturating_sub(2);
    app.detail_w = a.detail.width.saturating_sub(2);
    app.hits.findings = a.findings;
    app.hits.events = a.events;
    app.hits.detail = a.detail;
    app.hits.timeline = a.timeline;
    app.sync();
    app.detail.follow(app.detail_h as usize);

    draw_timeline(f, app, a.timeline, label_w);
    draw_findings(f, app, a.findings);
    draw_events(f, app, a.events);
    draw_detail(f, app, a.detail);
    draw_status(f, app, a.status);
    if app.help {
        draw_help(f, app, area);
    }
}

fn label_width(inner_w: u16) -> u16 {
    (inner_w / 5).clamp(8, 20)
}

// ---------------------------------------------------------------- timeline

/// One lane being drawn: a glyph, a style and a priority per column.
struct LaneCells {
    cells: Vec<(char, Style, u8)>,
}

const P_CURSOR: u8 = 1;
const P_CHILD: u8 = 2;
const P_BODY: u8 = 3;
const P_LABEL: u8 = 4;
const P_MARK: u8 = 5;

impl LaneCells {
    fn new(w: usize) -> LaneCells {
        LaneCells {
            cells: vec![(' ', Style::default(), 0); w],
        }
    }
    fn put(&mut self, col: i64, c: char, s: Style, p: u8) {
        if col < 0 {
            return;
        }
        if let Some(cell) = self.cells.get_mut(col as usize) {
            if p >= cell.2 {
                *cell = (c, s, p);
            }
        }
    }
    fn span(&mut self, a: i64, b: i64, c: char, s: Style) {
        self.span_at(a, b, c, s, P_BODY);
    }
    fn span_at(&mut self, a: i64, b: i64, c: char, s: Style, p: u8) {
        let w = self.cells.len() as i64;
        for col in a.max(0)..=b.min(w - 1) {
            self.put(col, c, s, p);
        }
    }
    /// Write `text` from `col` on, only over body or empty cells, stopping before a marker
    /// and leaving one free cell before the next marker.
    fn label(&mut self, col: i64, text: &str, s: Style) -> bool {
        let text = &*crate::views::terminal_safe(text);
        let w = self.cells.len() as i64;
        let n = text.chars().count() as i64;
        if col < 0 || col + n > w {
            return false;
        }
        for k in col..(col + n + 1).min(w) {
            if self.cells[k as usize].2 > P_BODY {
                return false;
            }
        }
        for (k, ch) in text.chars().enumerate() {
            self.cells[(col + k as i64) as usize] = (ch, s, P_LABEL);
        }
        true
    }
    fn highlight(&mut self, col: i64, s: Style) {
        if col < 0 {
            return;
        }
        if let Some(cell) = self.cells.get_mut(col as usize) {
            if cell.2 <= P_CURSOR {
                cell.0 = '◆';
            }
            cell.1 = s;
            cell.2 = u8::MAX;
        }
    }
    fn write(&self, buf: &mut Buffer, x: u16, y: u16) {
        for (k, (c, s, _)) in self.cells.iter().enumerate() {
            if let Some(cell) = buf.cell_mut((x + k as u16, y)) {
                cell.set_char(*c).set_style(*s);
            }
        }
    }
}

/// `xs.partition_point(pred)` for `pred` true of a prefix of `xs`, searched from `*from` on
/// (galloping) when `pred` holds just before it, else in all of `xs`; `*from` is left at
/// the answer. The generations of a lane are drawn in time order and ask for bounds that
/// grow: each search then reads a few nearby items instead of a binary search's far ones
/// (statuses and processes are up to 40k items of 80 bytes and more: a frame of the
/// whole capture spent half its time in those searches' cache misses).
fn seek<T>(xs: &[T], from: &mut usize, pred: impl Fn(&T) -> bool) -> usize {
    let n = xs.len();
    let mut lo = (*from).min(n);
    let p = if lo > 0 && !pred(&xs[lo - 1]) {
        xs.partition_point(&pred)
    } else {
        // xs[..lo] satisfy `pred`: probe lo, lo + 1, lo + 3, lo + 7, ...
        let mut step = 1;
        while lo + step <= n && pred(&xs[lo + step - 1]) {
            lo += step;
            step *= 2;
        }
        let hi = (lo + step - 1).min(n);
        lo + xs[lo..hi].partition_point(&pred)
    };
    *from = p;
    p
}

/// Start and end of a generation, as drawn (`None`: open on that side).
fn gen_bounds(gens: &[Generation], i: usize) -> (Option<f64>, Option<f64>) {
    let g = &gens[i];
    let start = g.started().map(|r| r.t as f64);
    let end = g
        .exit
        .as_ref()
        .map(|e| e.at.t)
        .into_iter()
        .chain(g.os_exit.map(|r| r.t))
        .max()
        .map(|t| t as f64)
        .or_else(|| {
            gens.get(i + 1)
                .and_then(|n| n.started())
                .map(|r| r.t as f64)
        });
    (start, end)
}

fn mark_role(m: Mark, tone: Tone) -> Role {
    match m {
        Mark::Online | Mark::Ready => Role::Good,
        Mark::Spawn => Role::Spawn,
        Mark::Stop => Role::Warn,
        Mark::Exit if tone >= Tone::Warn => Role::Bad,
        Mark::Exit => Role::Warn,
        Mark::Kill | Mark::Errored => Role::Bad,
        Mark::Plain | Mark::None => Role::Dim,
    }
}

fn draw_timeline(f: &mut Frame, app: &mut App, area: Rect, label_w: u16) {
    let color = app.color;
    let info = &app.model.info;
    let (t0, scale, w) = (app.t0, app.scale, app.plot_w as usize);
    let t1 = t0 + scale * w as f64;
    let mut title = vec![Span::styled("Timeline", style(color, Role::Head))];
    let mut right = format!(
        " 1 col = {} · {} → {} ",
        fmt_span(scale),
        fmt_time_f(info, t0, app.wall, 2),
        fmt_time_f(info, t1, app.wall, 2)
    );
    if app.follow {
        right = format!(" following ·{right}");
    }
    if app.filter_app.is_some() {
        title.push(Span::raw(format!(
            " · {}",
            crate::views::terminal_safe(&app.app_filter_label())
        )));
    }
    let legend = if area.width >= 100 {
        " S spawn  o online  i SIGINT  K SIGKILL  x exit  E errored  ├─┤ request  ◆ evidence  · daemon event "
    } else {
        " S spawn o online i SIGINT K SIGKILL x exit E errored "
    };
    let block = pane_block(app, Pane::Timeline, title)
        .title(Line::from(right).right_aligned())
        .title_bottom(Line::from(Span::styled(legend, style(color, Role::Dim))));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.height < 2 || inner.width < label_w + 2 {
        return;
    }
    let plot = Rect::new(inner.x + label_w + 1, inner.y, app.plot_w, inner.height);
    app.hits.plot = plot;
    app.hits.scale_y = inner.y;
    app.hits.lanes.clear();
    let col = |t: f64| -> i64 { ((t - t0) / scale).floor() as i64 };
    let buf = f.buffer_mut();

    // Scale.
    let base = if app.wall {
        (info.wall_ref_ns - info.mono_ref_ns as i128) as f64
    } else {
        -(info.mono_ref_ns as f64)
    };
    let mut step = 1_000.0f64;
    let label_len = if app.wall { 14.0 } else { 10.0 };
    'outer: for exp in 3..16 {
        for m in [1.0, 2.0, 5.0] {
            step = m * 10f64.powi(exp);
            if step / scale >= label_len + 2.0 {
                break 'outer;
            }
        }
    }
    let decimals = if step >= 1e9 {
        0
    } else {
        (9.0 - step.log10()).ceil().clamp(0.0, 9.0) as usize
    };
    let mut scale_cells = LaneCells::new(w);
    let first = ((t0 + base) / step).ceil() * step;
    let mut tick = first;
    while tick - base <= t1 {
        let t = tick - base;
        let c = col(t);
        scale_cells.put(c, '|', style(color, Role::Dim), P_BODY);
        let text = fmt_time_f(info, t, app.wall, decimals);
        scale_cells.label(c + 1, &text, style(color, Role::Dim));
        tick += step;
    }
    buf.set_string(
        inner.x,
        inner.y,
        fit("time", label_w as usize),
        style(color, Role::Dim),
    );
    let sel_col = (!app.model.is_empty()).then(|| col(app.model.row(app.sel).t as f64));
    for &r in &app.evidence {
        let c = col(app.model.row(r as usize).t as f64);
        scale_cells.put(c, '◆', style(color, Role::Evidence), u8::MAX - 1);
    }
    if let Some(c) = sel_col {
        scale_cells.put(c, '▼', style(color, Role::Head), u8::MAX);
    }
    scale_cells.write(buf, plot.x, plot.y);

    // Lanes.
    let mut fixed: Vec<(String, LaneRef, LaneCells)> = Vec::new();
    let model = &app.model;
    let app_ok = |pm_id: Option<u64>| -> bool {
        match app.filter_app {
            None => true,
            Some(a) => pm_id.and_then(|p| model.app_index_of(p)) == Some(a),
        }
    };
    let mut ev_lane_of_request: Vec<(u64, usize)> = Vec::new();
    if app.source_shown(crate::event::Source::Rpc) {
        let rows = if inner.height >= 10 { 2 } else { 1 };
        let mut lanes: Vec<LaneCells> = (0..rows).map(|_| LaneCells::new(w)).collect();
        let mut ends = vec![i64::MIN; rows];
        let now = model.span().map_or(t1, |(_, b)| b as f64);
        let req_s = style(color, Role::Req);
        let bad_s = style(color, Role::Bad);
        for r in &model.timeline.requests {
            let a = r.asked as f64;
            let b = r.answered.map_or(now, |x| x as f64);
            if b < t0 || a > t1 || !app_ok(r.pm_id) {
                continue;
            }
            let (ca, cb) = (col(a), col(b));
            let k = ends.iter().position(|&e| ca > e + 1).unwrap_or(rows - 1);
            ends[k] = ends[k].max(cb);
            let s = if r.error.is_some() { bad_s } else { req_s };
            let lane = &mut lanes[k];
            if cb <= ca {
                lane.put(ca, '┃', s, P_MARK);
            } else {
                lane.span(ca, cb, '─', s);
                lane.put(ca, '├', s, P_MARK);
                lane.put(cb, if r.answered.is_some() { '┤' } else { '▸' }, s, P_MARK);
                let name: Cow<str> = if r.error.is_some() {
                    format!("{} ✗", r.method).into()
                } else {
                    r.method.as_str().into()
                };
                if cb - ca > name.chars().count() as i64 {
                    lane.label(ca + 1, &name, s);
                } else if cb - ca > 2 {
                    let short = fit(&r.method, (cb - ca - 1) as usize);
                    lane.label(ca + 1, &short, s);
                }
            }
            // Only the evidence below looks these up.
            if !app.evidence.is_empty() {
                ev_lane_of_request.push((r.asked, k));
                if let Some(x) = r.answered {
                    ev_lane_of_request.push((x, k));
                }
            }
        }
        let used = ends
            .iter()
            .rposition(|&e| e != i64::MIN)
            .map_or(1, |k| k + 1);
        for (k, l) in lanes.into_iter().take(used).enumerate() {
            let label = if k == 0 { "pm2 requests" } else { "" };
            fixed.push((label.into(), LaneRef::Requests, l));
        }
    }
    let daemon_lane = if app.source_shown(crate::event::Source::Bus) {
        let mut lane = LaneCells::new(w);
        let lo_t = t0.max(0.0) as u64;
        let d = &model.daemon;
        let lo = d.partition_point(|r| r.tk < lo_t);
        let hi_t = t1.max(0.0) as u64;
        let hi = d.partition_point(|r| r.tk <= hi_t);
        let mut best: Vec<(Mark, Tone)> = vec![(Mark::None, Tone::Quiet); w];
        for r in &d[lo..hi] {
            if app.filter_app.is_some_and(|a| r.app != a) {
                continue;
            }
            let c = col(r.t as f64);
            if c < 0 || c as usize >= w {
                continue;
            }
            let b = &mut best[c as usize];
            if (r.mark, r.tone) > *b {
                *b = (r.mark, r.tone);
            }
        }
        for (c, (m, tone)) in best.into_iter().enumerate() {
            if m != Mark::None {
                lane.put(
                    c as i64,
                    m.glyph(),
                    style(color, mark_role(m, tone)),
                    P_MARK,
                );
            }
        }
        fixed.push(("daemon".into(), LaneRef::Daemon, lane));
        Some(fixed.len() - 1)
    } else {
        None
    };

    // App generations that overlap the window: listed cheaply, drawn only if shown.
    let span_end = model.span().map_or(t1, |(_, b)| b as f64);
    let mut overlapping: Vec<(u64, usize, f64, f64)> = Vec::new();
    for (pm_id, at) in &model.timeline.apps {
        if !app_ok(Some(*pm_id)) {
            continue;
        }
        let gens = &at.generations;
        let first_visible = gens.partition_point(|g| {
            // Generations are in time order: skip those that ended before the window.
            g.exit
                .as_ref()
                .map(|e| e.at.t)
                .or(g.os_exit.map(|r| r.t))
                .is_some_and(|e| (e as f64) < t0)
        });
        for gi in first_visible.saturating_sub(1)..gens.len() {
            let (s, e) = gen_bounds(gens, gi);
            let sv = s.unwrap_or(f64::MIN);
            let ev = e.unwrap_or(span_end.max(sv));
            if sv > t1 {
                break;
            }
            if ev >= t0 {
                overlapping.push((*pm_id, gi, sv, ev));
            }
        }
    }
    let avail = inner.height as usize - 1;
    let fixed_n = fixed.len().min(avail);
    let room = avail - fixed_n;
    // One lane per generation; when they do not fit, generations of an app that follow
    // each other share a lane (zoom in to separate them).
    let mut groups: Vec<Vec<(u64, usize, f64, f64)>> = Vec::new();
    if overlapping.len() <= room || room == 0 {
        groups = overlapping.iter().map(|x| vec![*x]).collect();
    } else {
        // Take turns: generation j of an app goes to its lane j mod (its lanes), so that
        // the generations sharing a lane are far apart.
        let per_lane = overlapping.len().div_ceil(room);
        let mut k = 0;
        while k < overlapping.len() {
            let app = overlapping[k].0;
            let n = overlapping[k..].iter().take_while(|x| x.0 == app).count();
            let lanes = n.div_ceil(per_lane);
            let base = groups.len();
            groups.extend((0..lanes).map(|_| Vec::new()));
            for (j, x) in overlapping[k..k + n].iter().enumerate() {
                groups[base + j % lanes].push(*x);
            }
            k += n;
        }
    }
    let total = groups.len();
    let more = total > room;
    let shown_n = if more { room.saturating_sub(1) } else { room };
    let max_top = total.saturating_sub(shown_n);
    if app.lane_top > max_top {
        app.lane_top = max_top;
    }
    let top = app.lane_top;
    let mut gen_lanes: Vec<(String, LaneRef, LaneCells, Vec<usize>)> = Vec::new();
    // Main pids of each app's generations, made when a child needs telling apart.
    let mut main_pids: std::collections::HashMap<u64, std::collections::HashSet<i64>> =
        std::collections::HashMap::new();
    // A lane's marks, reused from one generation to the next.
    let mut marks: Vec<(f64, Mark, Role, Option<Cow<'static, str>>)> = Vec::new();
    for group in groups.iter().skip(top).take(shown_n) {
        // Where the last generation's searches ended: a group's generations follow each
        // other, so the next search starts there (see `seek`).
        let (mut proc_from, mut status_from) = (0, 0);
        let pm_id = &group[0].0;
        let at = &model.timeline.apps[pm_id];
        let gens = &at.generations;
        let who = match &at.name {
            Some(n) => format!("{n}:{pm_id}"),
            None => format!("#{pm_id}"),
        };
        let mut lane = LaneCells::new(w);
        // Labels go last, into the cells no generation of the lane uses.
        let mut labels: Vec<(i64, String, Role)> = Vec::new();
        let mut tail_labels: Vec<(i64, String)> = Vec::new();
        // A lane with more generations than room for words gets none.
        let dense = group.len() * 8 > w;
        for &(_, gi, sv, ev) in group {
            let g = &gens[gi];
            let stop_t = g.stop.as_ref().map(|s| s.requested.t as f64);
            let (ca, cb) = (col(sv.max(t0 - scale)), col(ev.min(t1 + scale)));
            let run_s = style(color, Role::Good);
            let stop_s = style(color, Role::Warn);
            match stop_t {
                Some(st) if st < ev => {
                    lane.span(ca, col(st), '━', run_s);
                    lane.span(col(st), cb, '╍', stop_s);
                }
                _ => lane.span(ca, cb, '━', run_s),
            }
            // Processes the watcher saw start during this generation besides its main one
            // (children) that outlived it: they keep what they held (a port) after pm2 has
            // moved on. Drawn from the generation's end to theirs.
            let mut tails: Vec<(i64, i64)> = Vec::new();
            if gen_bounds(gens, gi).1.is_some() && ev <= t1 {
                let child_s = style(color, Role::Warn);
                // Processes are kept in the order they were first seen.
                let from = seek(&at.processes, &mut proc_from, |p| {
                    (p.first_seen.t as f64) < sv
                });
                for p in &at.processes[from..] {
                    let a = p.first_seen.t as f64;
                    if a > ev {
                        break;
                    }
                    let b = p.exit.map_or(span_end, |x| x.t as f64);
                    if b <= ev || b < t0 {
                        continue;
                    }
                    let mains = main_pids
                        .entry(*pm_id)
                        .or_insert_with(|| gens.iter().filter_map(|g| g.pid).collect());
                    if mains.contains(&p.pid) {
                        continue;
                    }
                    lane.span_at(col(ev), col(b.min(t1 + scale)), '┈', child_s, P_CHILD);
                    if let Some(x) = p.exit {
                        lane.put(col(x.t as f64), '×', child_s, P_MARK);
                    }
                    tails.push((col(ev), p.pid));
                }
            }
            marks.clear();
            if let Some(r) = g.starting {
                marks.push((r.t as f64, Mark::Spawn, Role::Spawn, None));
            }
            if let Some(r) = g.online {
                marks.push((r.t as f64, Mark::Online, Role::Good, None));
            }
            if let Some(r) = g.ready() {
                marks.push((
                    r.t as f64,
                    Mark::Ready,
                    Role::Good,
                    Some(Cow::Borrowed("ready")),
                ));
            }
            if let Some(s) = &g.stop {
                // A cluster reload's outgoing worker, parked as `_old_<id>`.
                // A lane too dense for words gets none: they are not made.
                let what = if dense {
                    None
                } else if g.parked_by.is_some() {
                    Some(Cow::Owned(format!("SIGINT (reload: _old_{pm_id})")))
                } else {
                    Some(Cow::Borrowed("SIGINT"))
                };
                marks.push((s.requested.t as f64, Mark::Stop, Role::Warn, what));
                if let Some(k) = s.sigkill {
                    marks.push((
                        k.t as f64,
                        Mark::Kill,
                        Role::Bad,
                        Some(Cow::Borrowed("SIGKILL")),
                    ));
                }
            }
            let exit_at = g.exit.as_ref().map(|x| x.at.t).or(g.os_exit.map(|r| r.t));
            if let Some(xt) = exit_at {
                let (label, bad): (Cow<'static, str>, bool) = match &g.exit {
                    Some(x) if x.signal.as_deref() == Some("SIGKILL") => ("SIGKILL".into(), true),
                    Some(x) => match x.code {
                        Some(c) if dense => ("".into(), c != 0),
                        Some(c) => (format!("code {c}").into(), c != 0),
                        None => ("exit".into(), false),
                    },
                    None => (
                        match &g.os_exit_status {
                            Some(st) if !dense => st.clone().into(),
                            Some(_) => "".into(),
                            None => "exit".into(),
                        },
                        g.os_exit_status.as_deref().is_some_and(|s| s != "code 0"),
                    ),
                };
                let role = if bad { Role::Bad } else { Role::Warn };
                marks.push((xt as f64, Mark::Exit, role, Some(label)));
            }
            // Errored while this generation was the current one.
            let next_start = gens
                .get(gi + 1)
                .and_then(|n| n.started())
                .map_or(f64::MAX, |r| r.t as f64);
            let lo = sv.max(t0);
            let from = seek(&at.statuses, &mut status_from, |st| (st.at.t as f64) < lo);
            for st in &at.statuses[from..] {
                let t = st.at.t as f64;
                if t >= next_start || t > t1 {
                    break;
                }
                if st.status == "errored" {
                    marks.push((t, Mark::Errored, Role::Bad, Some(Cow::Borrowed("errored"))));
                }
            }
            marks.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (t, m, role, _) in &marks {
                lane.put(col(*t), m.glyph(), style(color, *role), P_MARK + *m as u8);
            }
            for (t, m, role, label) in &marks {
                let c = col(*t);
                let shown = c >= 0 && lane.cells.get(c as usize).is_some_and(|x| x.0 == m.glyph());
                if let (Some(l), true, false) = (label, shown, dense) {
                    labels.push((c + 1, l.to_string(), *role));
                }
            }
            for (c, pid) in tails {
                tail_labels.push((c, format!(" child {pid} lives on")));
            }
        }
        for (c, l, role) in labels {
            lane.label(c, &l, style(color, role));
        }
        for (c, text) in tail_labels {
            let warn = style(color, Role::Warn);
            (c + 1..c + 24).any(|k| lane.label(k, &text, warn));
        }
        let first = &gens[group[0].1];
        let label = if group.len() == 1 {
            let pid = first
                .pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "?".into());
            format!("{who} #{} {pid}", first.seq)
        } else {
            // Only as much as the lane's label shows (`fit` cuts it to `label_w`; digits and
            // commas are kept as they are by `terminal_safe`): the whole list of a lane
            // of a thousand generations was made for every frame.
            let mut label = format!("{who} #");
            let mut chars = label.chars().count();
            for (k, x) in group.iter().enumerate() {
                if chars > label_w as usize {
                    break;
                }
                if k > 0 {
                    label.push(',');
                    chars += 1;
                }
                let before = label.len();
                crate::event::push_u64(&mut label, u64::from(gens[x.1].seq));
                chars += label.len() - before;
            }
            label
        };
        let members = group.iter().map(|x| x.1).collect();
        let lref = LaneRef::Gen {
            pm_id: *pm_id,
            gi: group[0].1,
        };
        gen_lanes.push((label, lref, lane, members));
    }

    // Evidence of the selected finding, on the lane it belongs to.
    let ev_style = style(color, Role::Evidence);
    for &r in &app.evidence {
        let row = model.row(r as usize);
        let c = col(row.t as f64);
        if c < 0 || c as usize >= w {
            continue;
        }
        let target: Option<&mut LaneCells> = match row.kind {
            RowKind::Ask | RowKind::Answer => {
                let k = ev_lane_of_request
                    .iter()
                    .find(|(t, _)| *t == row.t)
                    .map_or(0, |(_, k)| *k);
                fixed
                    .iter_mut()
                    .filter(|l| l.1 == LaneRef::Requests)
                    .nth(k)
                    .map(|l| &mut l.2)
            }
            _ => {
                let gen = (row.kind != RowKind::Daemon && row.app != NONE)
                    .then(|| model.apps.get(row.app as usize).map(|a| a.pm_id))
                    .flatten()
                    .and_then(|pm_id| {
                        gen_lanes.iter().position(|(_, l, _, members)| match l {
                            LaneRef::Gen { pm_id: p, .. } if *p == pm_id => {
                                let gens = &model.timeline.apps[p].generations;
                                members.iter().any(|gi| {
                                    let (s, e) = gen_bounds(gens, *gi);
                                    let t = row.t as f64;
                                    s.is_none_or(|s| s <= t) && e.is_none_or(|e| t <= e)
                                })
                            }
                            _ => false,
                        })
                    });
                match (gen, daemon_lane) {
                    (Some(g), _) => Some(&mut gen_lanes[g].2),
                    (None, Some(d)) => Some(&mut fixed[d].2),
                    (None, None) => None,
                }
            }
        };
        if let Some(l) = target {
            l.highlight(c, ev_style);
        }
    }

    // Lay the lanes out: fixed ones first, then the generations from lane_top.
    let cursor_s = style(color, Role::Cursor);
    let mut y = inner.y + 1;
    let mut put_lane =
        |buf: &mut Buffer, label: &str, lref: LaneRef, mut cells: LaneCells, y: u16| {
            if let Some(c) = sel_col {
                cells.put(c, '│', cursor_s, P_CURSOR);
            }
            buf.set_string(
                inner.x,
                y,
                format!(
                    "{:<width$}",
                    fit(label, label_w as usize),
                    width = label_w as usize
                ),
                style(color, Role::Plain),
            );
            cells.write(buf, plot.x, y);
            app.hits.lanes.push((y, lref));
        };
    for (label, lref, cells) in fixed.into_iter().take(fixed_n) {
        put_lane(buf, &label, lref, cells, y);
        y += 1;
    }
    for (label, lref, cells, _) in gen_lanes {
        put_lane(buf, &label, lref, cells, y);
        y += 1;
    }
    if more && room > 0 {
        let hidden = total - shown_n;
        let text = format!(
            "{hidden} more lane{} ({} above, {} below): Tab to the timeline, j/k, or zoom",
            if hidden == 1 { "" } else { "s" },
            top,
            total - top - shown_n
        );
        buf.set_string(
            inner.x,
            y,
            fit(&text, inner.width as usize),
            style(color, Role::Dim),
        );
    } else if total == 0 && room > 0 && !app.model.is_empty() {
        buf.set_string(
            inner.x,
            y,
            fit("no app generation in this window", inner.width as usize),
            style(color, Role::Dim),
        );
    }
}

// ---------------------------------------------------------------- lists

fn draw_findings(f: &mut Frame, app: &mut App, area: Rect) {
    let color = app.color;
    let n = app.model.findings.len();
    let mut title = vec![Span::styled("Findings", style(color, Role::Head))];
    if n > 0 {
        title.push(Span::raw(format!(" {}/{n}", app.fsel + 1)));
    }
    if app.model.findings_stale() && app.live.is_some() {
        title.push(Span::styled(" (updating)", style(color, Role::Dim)));
    }
    let block = pane_block(app, Pane::Findings, title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let buf = f.buffer_mut();
    if n == 0 {
        let text = if app.loader.is_some() {
            "reading the capture…"
        } else if app.model.is_empty() {
            "no events yet"
        } else {
            "no findings: nothing the rules recognise went wrong"
        };
        buf.set_string(
            inner.x,
            inner.y,
            fit(text, inner.width as usize),
            style(color, Role::Dim),
        );
        return;
    }
    let h = inner.height as usize;
    for (k, i) in (app.ftop..n).take(h).enumerate() {
        let fd = &app.model.findings[i];
        let (letter, role) = match fd.severity {
            Severity::Error => ("E", Role::Bad),
            Severity::Warning => ("W", Role::Warn),
            Severity::Info => ("I", Role::Plain),
        };
        let who = fd.app.as_deref().map(|a| match fd.pm_id {
            Some(id) => format!("{a}:{id} "),
            None => format!("{a} "),
        });
        let text = format!("{}{}: {}", who.unwrap_or_default(), fd.kind, fd.summary);
        let y = inner.y + k as u16;
        let sel = i == app.fsel;
        let base = if sel {
            style(color, Role::Sel)
        } else {
            Style::default()
        };
        buf.set_string(inner.x, y, " ".repeat(inner.width as usize), base);
        buf.set_string(inner.x, y, letter, style(color, role).patch(base));
        buf.set_string(
            inner.x + 2,
            y,
            fit(&text, inner.width.saturating_sub(2) as usize),
            base,
        );
    }
}

fn source_short(s: crate::event::Source) -> &'static str {
    match s {
        crate::event::Source::Recorder => "rec",
        crate::event::Source::Rpc => "rpc",
        crate::event::Source::Bus => "bus",
        crate::event::Source::Proc => "proc",
        crate::event::Source::Logs => "log",
    }
}

fn draw_events(f: &mut Frame, app: &mut App, area: Rect) {
    let color = app.color;
    let n = app.vis_len();
    let mut title = vec![Span::styled("Events", style(color, Role::Head))];
    if n > 0 {
        title.push(Span::raw(format!(" {}/{n}", app.vis_pos(app.sel) + 1)));
    }
    if app.filtered() {
        let srcs: Vec<&str> = SOURCE_KEYS
            .iter()
            .zip(app.sources)
            .filter(|(_, on)| *on)
            .map(|(s, _)| source_short(*s))
            .collect();
        title.push(Span::styled(
            format!(" [{} · {}]", app.app_filter_label(), srcs.join(",")),
            style(color, Role::Warn),
        ));
    }
    let block = pane_block(app, Pane::Events, title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let buf = f.buffer_mut();
    let h = inner.height as usize;
    let w = inner.width as usize;
    let show_app = w >= 70;
    let tw = if app.wall { 13 } else { 8 };
    for (k, p) in (app.list_top..n).take(h).enumerate() {
        let i = app.vis_row(p);
        let r = *app.model.row(i);
        let y = inner.y + k as u16;
        let sel = i == app.sel;
        let base = if sel {
            style(color, Role::Sel)
        } else {
            Style::default()
        };
        buf.set_string(inner.x, y, " ".repeat(w), base);
        let mut x = inner.x;
        if app.is_evidence(i) {
            buf.set_string(x, y, "◆", style(color, Role::Evidence));
        }
        x += 1;
        let t = fmt_time(&app.model.info, r.t, app.wall, 3);
        buf.set_string(
            x,
            y,
            format!("{t:>tw$}"),
            style(color, Role::Dim).patch(base),
        );
        x += tw as u16 + 1;
        buf.set_string(
            x,
            y,
            format!("{:<4}", source_short(r.source)),
            style(color, Role::Req).patch(base),
        );
        x += 5;
        if show_app {
            let a = app.model.app_label(r.app).unwrap_or_default();
            buf.set_string(x, y, format!("{:<9}", fit(&a, 9)), base);
            x += 10;
        }
        let rest = (inner.x + inner.width).saturating_sub(x) as usize;
        let text = fit(app.model.text(i), rest);
        buf.set_string(x, y, text, style(color, tone_role(r.tone)).patch(base));
    }
    if n == 0 {
        let msg = if app.model.is_empty() {
            if app.live.is_some() {
                "waiting for events…"
            } else {
                "no events"
            }
        } else {
            "no events pass the filter (x clears it)"
        };
        buf.set_string(inner.x, inner.y, fit(msg, w), style(color, Role::Dim));
    }
}

fn draw_detail(f: &mut Frame, app: &mut App, area: Rect) {
    let color = app.color;
    let what = match app.detail_of {
        DetailOf::Finding if !app.model.findings.is_empty() => "finding",
        _ => "event",
    };
    let title = vec![
        Span::styled("Detail", style(color, Role::Head)),
        Span::raw(format!(" · {what}")),
    ];
    let block = pane_block(app, Pane::Detail, title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    app.hits.detail_body = inner;
    let buf = f.buffer_mut();
    let d = &app.detail;
    let focused = app.focus == Pane::Detail;
    for k in 0..inner.height as usize {
        let i = d.scroll + k;
        if i >= d.len() {
            break;
        }
        let y = inner.y + k as u16;
        let cur = focused && i == d.cursor;
        let base = if cur {
            style(color, Role::Sel)
        } else {
            Style::default()
        };
        if cur {
            buf.set_string(inner.x, y, " ".repeat(inner.width as usize), base);
        }
        let mut skip = d.hscroll;
        let mut x = inner.x;
        let end = inner.x + inner.width;
        for (text, cls) in d.spans(i) {
            if x >= end {
                break;
            }
            let n = text.chars().count();
            let shown: String = if skip >= n {
                skip -= n;
                continue;
            } else {
                let s: String = text.chars().skip(skip).collect();
                skip = 0;
                s
            };
            let room = (end - x) as usize;
            let cut = fit(&shown, room);
            let len = cut.chars().count() as u16;
            buf.set_string(x, y, &cut, style(color, cls_role(cls)).patch(base));
            x += len;
        }
    }
    if d.len() > inner.height as usize && inner.height > 0 {
        let pos = format!(" {}/{} ", d.cursor + 1, d.len());
        let x = area.x + area.width.saturating_sub(pos.chars().count() as u16 + 1);
        buf.set_string(x, area.y + area.height - 1, pos, style(color, Role::Dim));
    }
}

// ---------------------------------------------------------------- status and help

fn draw_status(f: &mut Frame, app: &mut App, area: Rect) {
    let color = app.color;
    let buf = f.buffer_mut();
    let w = area.width as usize;
    buf.set_string(area.x, area.y, " ".repeat(w), style(color, Role::Sel));
    if let Some(q) = &app.search {
        let text = format!("/{q}█  (Enter: find, Esc: cancel)");
        buf.set_string(area.x, area.y, fit(&text, w), style(color, Role::Sel));
        return;
    }
    let right = " ? help  q quit ";
    let mut left = String::from(" ");
    if let Some(l) = &app.loader {
        let pct = (l.read * 100).checked_div(l.total).unwrap_or(0);
        left.push_str(&format!("reading {}% · ", pct));
    }
    match &app.live {
        Some(LiveState::Recording) => left.push_str("● REC "),
        Some(LiveState::Stopping) => left.push_str("stopping… "),
        Some(LiveState::Ended(why)) => left.push_str(&format!("recording ended: {why} · ")),
        None => {}
    }
    left.push_str(&app.model.name);
    left.push_str(&format!(" · {} events", app.model.len()));
    if let Some(m) = &app.message {
        left.push_str(&format!(" · {m}"));
    } else if let Some(p) = app.model.problems.first() {
        left.push_str(&format!(" · {p}"));
    } else {
        left.push_str(if app.wall {
            " · wall clock (UTC)"
        } else {
            " · time since start"
        });
    }
    let lw = w.saturating_sub(right.chars().count());
    buf.set_string(area.x, area.y, fit(&left, lw), style(color, Role::Sel));
    if w > right.len() + 10 {
        buf.set_string(
            area.x + lw as u16,
            area.y,
            right,
            style(color, Role::Sel).add_modifier(Modifier::BOLD),
        );
    }
}

/// Every key, for the help overlay.
pub(crate) const HELP: &[(&str, &str)] = &[
    ("Tab  Shift-Tab", "next / previous pane"),
    ("↑ ↓  j k", "move (timeline: scroll lanes; detail: cursor)"),
    (
        "PgUp PgDn g G",
        "page up / down; first / last (also Home End)",
    ),
    ("← →  h l", "pan the timeline (detail: fold / unfold)"),
    (
        "H L  [ ]",
        "timeline: pan half a window; previous / next event",
    ),
    ("+ -  0", "zoom in / out; whole capture"),
    ("t", "time since start / wall clock (UTC)"),
    (
        "Enter  Esc",
        "details (on an evidence line: its event); back",
    ),
    ("n N", "next / previous finding (the timeline jumps to it)"),
    ("/  . ,", "search the events; next / previous match"),
    (
        "a  1 2 3 4  x",
        "filter: cycle apps; rpc bus proc rec on/off; clear",
    ),
    (
        "Space e c < >",
        "detail: fold; expand all; collapse all; sideways",
    ),
    ("f", "record --tui: follow the newest event"),
    ("mouse", "wheel scrolls the pane under it (timeline: lanes,"),
    ("", "Shift+wheel pans, Ctrl+wheel zooms); click selects"),
    (
        "?  q  Ctrl-C",
        "this help; quit (record --tui: stop recording)",
    ),
    (
        "Lanes",
        "pm2 requests ├─┤ ask to answer (red: error reply),",
    ),
    (
        "",
        "daemon events, one lane per app generation: app #gen pid",
    ),
    (
        "Markers",
        "S spawn o online r ready i SIGINT K SIGKILL x exit",
    ),
    ("", "E errored; a reload's old worker _old_N keeps its lane"),
    ("", "━ running ╍ stopping ◆ evidence │ selection ▼ selected"),
];

fn draw_help(f: &mut Frame, app: &mut App, area: Rect) {
    let color = app.color;
    let w = area.width.saturating_sub(4).min(84);
    let h = area.height.saturating_sub(2).min(HELP.len() as u16 + 2);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    f.render_widget(Clear, r);
    let max_scroll = (HELP.len() as u16 + 2).saturating_sub(h);
    app.help_scroll = app.help_scroll.min(max_scroll);
    let title = if max_scroll > 0 {
        " Keys (j/k scroll, any other key closes) "
    } else {
        " Keys (any key closes) "
    };
    let block = Block::bordered()
        .border_type(BorderType::Double)
        .title(Line::from(Span::styled(title, style(color, Role::Head))));
    let inner = block.inner(r);
    f.render_widget(block, r);
    let kw = 16usize;
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(format!(" {k:<kw$} "), style(color, Role::Key)),
                Span::raw(*v),
            ])
        })
        .collect();
    f.render_widget(Paragraph::new(lines).scroll((app.help_scroll, 0)), inner);
}

#[cfg(test)]
mod tests {
    use super::seek;

    /// `seek` answers what `partition_point` does, from any cursor: one a later search
    /// left (galloping on from it), one past the answer (searching all again), or none.
    #[test]
    fn seek_is_partition_point_from_any_cursor() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for n in [0usize, 1, 2, 3, 7, 64, 1000] {
            let mut xs: Vec<u64> = (0..n).map(|_| next() % 500).collect();
            xs.sort_unstable();
            let mut from = 0;
            for _ in 0..300 {
                let bound = next() % 520;
                if next() % 4 == 0 {
                    from = (next() % (n as u64 + 3)) as usize;
                }
                let want = xs.partition_point(|&x| x < bound);
                assert_eq!(seek(&xs, &mut from, |&x| x < bound), want, "{n} {bound}");
                assert_eq!(from, want);
            }
        }
    }
}
