//! The detail pane's document: lines of text and JSON trees that fold, with a cursor.
//!
//! JSON values are stored once as a flat node arena (pre-order, each node knowing where its
//! subtree ends); the visible lines are recomputed from the fold state when it changes, and
//! only the lines on screen are turned into text.

use serde_json::Value;
use std::collections::HashSet;

/// What a piece of text is, for colouring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cls {
    Plain,
    Head,
    Dim,
    Key,
    Str,
    Num,
    Lit,
    Punct,
    Good,
    Warn,
    Bad,
    Mark,
}

/// A line as spans.
pub(crate) type Spans = Vec<(String, Cls)>;

/// Containers with more nodes than this start folded (below the top level).
const FOLD_ABOVE: u32 = 12;
/// Longest string shown on one line, in characters (the line can be scrolled sideways).
const MAX_STR: usize = 4000;
/// Most nodes kept per document; the rest of a huge value is summarised.
const MAX_NODES: usize = 200_000;

#[derive(Debug)]
enum NodeKind {
    Scalar(String, Cls),
    Object(u32),
    Array(u32),
}

#[derive(Debug)]
struct Node {
    depth: u16,
    key: Option<String>,
    /// Whether the key is a JSON object key (quoted) or a label/index.
    quoted: bool,
    kind: NodeKind,
    parent: u32,
    /// Index after the last node of the subtree.
    end: u32,
    /// Last child of its parent (no comma).
    last: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Text(u32),
    Open(u32),
    Close(u32),
    Leaf(u32),
    Folded(u32),
}

/// A document for the detail pane.
#[derive(Debug, Default)]
pub struct Doc {
    texts: Vec<Spans>,
    /// Text lines that stand for a timeline row (Enter goes there).
    links: std::collections::HashMap<u32, usize>,
    nodes: Vec<Node>,
    folded: HashSet<u32>,
    lines: Vec<Line>,
    /// Order of the items: text line index or JSON root node.
    items: Vec<Line>,
    pub cursor: usize,
    pub(crate) scroll: usize,
    pub(crate) hscroll: usize,
}

const NO_PARENT: u32 = u32::MAX;

impl Doc {
    pub(crate) fn new() -> Doc {
        Doc::default()
    }

    /// Add a line of text.
    pub(crate) fn text(&mut self, spans: Spans) {
        self.items.push(Line::Text(self.texts.len() as u32));
        self.texts.push(spans);
        self.relayout();
    }

    /// Add a line of text that stands for timeline row `row`.
    pub(crate) fn link(&mut self, spans: Spans, row: usize) {
        self.links.insert(self.texts.len() as u32, row);
        self.text(spans);
    }

    /// The row the line at the cursor stands for.
    pub(crate) fn link_at_cursor(&self) -> Option<usize> {
        match self.lines.get(self.cursor)? {
            Line::Text(t) => self.links.get(t).copied(),
            _ => None,
        }
    }

    /// Add a plain line.
    pub(crate) fn line(&mut self, s: impl Into<String>, cls: Cls) {
        self.text(vec![(s.into(), cls)]);
    }

    /// Add a JSON value under a label, folded where it is big.
    pub(crate) fn json(&mut self, label: &str, v: &Value) {
        let root = self.nodes.len() as u32;
        self.add_node(v, Some(label.to_owned()), false, 0, NO_PARENT, true);
        self.items.push(Line::Open(root));
        // Default folds: big containers below the top two levels, unless they are the only
        // item of their parent (then their big parts fold instead).
        for i in root..self.nodes.len() as u32 {
            let n = &self.nodes[i as usize];
            let container = !matches!(n.kind, NodeKind::Scalar(..));
            let single = |k: &NodeKind| matches!(k, NodeKind::Object(1) | NodeKind::Array(1));
            let only = n.parent != NO_PARENT && single(&self.nodes[n.parent as usize].kind);
            if container && n.depth >= 2 && n.end - i > FOLD_ABOVE && !only && !single(&n.kind) {
                self.folded.insert(i);
            }
        }
        self.relayout();
    }

    fn add_node(
        &mut self,
        v: &Value,
        key: Option<String>,
        quoted: bool,
        depth: u16,
        parent: u32,
        last: bool,
    ) {
        let me = self.nodes.len() as u32;
        let kind = match v {
            _ if self.nodes.len() >= MAX_NODES => {
                NodeKind::Scalar("… (too big to show whole)".into(), Cls::Dim)
            }
            Value::Null => NodeKind::Scalar("null".into(), Cls::Lit),
            Value::Bool(b) => NodeKind::Scalar(b.to_string(), Cls::Lit),
            Value::Number(n) => NodeKind::Scalar(n.to_string(), Cls::Num),
            Value::String(s) => {
                let mut q = serde_json::to_string(s).unwrap_or_default();
                if q.chars().count() > MAX_STR {
                    q = q.chars().take(MAX_STR).collect::<String>() + "…";
                }
                NodeKind::Scalar(q, Cls::Str)
            }
            Value::Array(a) => NodeKind::Array(a.len() as u32),
            Value::Object(o) => NodeKind::Object(o.len() as u32),
        };
        let is_scalar = matches!(kind, NodeKind::Scalar(..));
        self.nodes.push(Node {
            depth,
            key,
            quoted,
            kind,
            parent,
            end: me + 1,
            last,
        });
        if !is_scalar {
            match v {
                Value::Array(a) => {
                    let n = a.len();
                    for (i, x) in a.iter().enumerate() {
                        self.add_node(x, None, false, depth + 1, me, i + 1 == n);
                    }
                }
                Value::Object(o) => {
                    let n = o.len();
                    for (i, (k, x)) in o.iter().enumerate() {
                        self.add_node(x, Some(k.clone()), true, depth + 1, me, i + 1 == n);
                    }
                }
                _ => {}
            }
        }
        self.nodes[me as usize].end = self.nodes.len() as u32;
    }

    fn relayout(&mut self) {
        let mut lines = Vec::with_capacity(self.lines.len());
        for item in &self.items {
            match *item {
                Line::Open(root) => self.flatten(root, &mut lines),
                other => lines.push(other),
            }
        }
        self.lines = lines;
        self.cursor = self.cursor.min(self.lines.len().saturating_sub(1));
    }

    fn flatten(&self, i: u32, out: &mut Vec<Line>) {
        let n = &self.nodes[i as usize];
        match n.kind {
            NodeKind::Scalar(..) => out.push(Line::Leaf(i)),
            NodeKind::Object(0) | NodeKind::Array(0) => out.push(Line::Leaf(i)),
            _ if self.folded.contains(&i) => out.push(Line::Folded(i)),
            _ => {
                out.push(Line::Open(i));
                let mut j = i + 1;
                while j < n.end {
                    self.flatten(j, out);
                    j = self.nodes[j as usize].end;
                }
                out.push(Line::Close(i));
            }
        }
    }

    /// Number of visible lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    fn node_of(&self, line: usize) -> Option<u32> {
        match *self.lines.get(line)? {
            Line::Open(n) | Line::Close(n) | Line::Leaf(n) | Line::Folded(n) => Some(n),
            Line::Text(_) => None,
        }
    }

    fn line_of(&self, want: Line) -> Option<usize> {
        self.lines.iter().position(|l| *l == want)
    }

    fn is_container(&self, n: u32) -> bool {
        let node = &self.nodes[n as usize];
        matches!(node.kind, NodeKind::Object(k) | NodeKind::Array(k) if k > 0)
    }

    /// Fold or unfold the container at the cursor (or the one the cursor is in).
    pub(crate) fn toggle(&mut self) {
        let Some(n) = self.node_of(self.cursor) else {
            return;
        };
        if self.is_container(n) {
            if !self.folded.remove(&n) {
                self.folded.insert(n);
            }
            self.relayout();
            self.cursor = self
                .line_of(Line::Open(n))
                .or_else(|| self.line_of(Line::Folded(n)))
                .unwrap_or(self.cursor);
        } else {
            self.fold();
        }
    }

    /// Fold the container at the cursor; on a leaf or a folded one, go to (and fold) its parent.
    pub(crate) fn fold(&mut self) {
        let Some(n) = self.node_of(self.cursor) else {
            return;
        };
        let open = matches!(self.lines[self.cursor], Line::Open(_) | Line::Close(_));
        let target = if open && self.is_container(n) {
            n
        } else {
            let p = self.nodes[n as usize].parent;
            if p == NO_PARENT {
                return;
            }
            p
        };
        self.folded.insert(target);
        self.relayout();
        if let Some(l) = self.line_of(Line::Folded(target)) {
            self.cursor = l;
        }
    }

    /// Unfold the container at the cursor.
    pub(crate) fn unfold(&mut self) {
        let Some(n) = self.node_of(self.cursor) else {
            return;
        };
        if self.folded.remove(&n) {
            self.relayout();
        }
    }

    /// Unfold everything.
    pub(crate) fn expand_all(&mut self) {
        let keep = self.node_of(self.cursor);
        self.folded.clear();
        self.relayout();
        if let Some(n) = keep {
            self.cursor = self
                .line_of(Line::Open(n))
                .or_else(|| self.line_of(Line::Leaf(n)))
                .unwrap_or(self.cursor);
        }
    }

    /// Fold every container below the top level.
    pub(crate) fn collapse_all(&mut self) {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.depth >= 1 && matches!(n.kind, NodeKind::Object(k) | NodeKind::Array(k) if k > 0) {
                self.folded.insert(i as u32);
            }
        }
        self.relayout();
    }

    /// Move the cursor by `d` lines.
    pub(crate) fn move_by(&mut self, d: isize) {
        let max = self.lines.len().saturating_sub(1) as isize;
        self.cursor = (self.cursor as isize + d).clamp(0, max.max(0)) as usize;
    }

    /// Keep the cursor on screen for a pane of `height` lines.
    pub(crate) fn follow(&mut self, height: usize) {
        if height == 0 {
            return;
        }
        if self.cursor < self.scroll {
            self.scroll = self.cursor;
        } else if self.cursor >= self.scroll + height {
            self.scroll = self.cursor + 1 - height;
        }
        let max = self.lines.len().saturating_sub(height);
        self.scroll = self.scroll.min(max);
    }

    /// The spans of visible line `i`, terminal-safe ([`crate::views::terminal_safe`]).
    pub(crate) fn spans(&self, i: usize) -> Spans {
        let mut s = self.spans_raw(i);
        for (text, _) in &mut s {
            if let std::borrow::Cow::Owned(safe) = crate::views::terminal_safe(text) {
                *text = safe;
            }
        }
        s
    }

    fn spans_raw(&self, i: usize) -> Spans {
        let Some(line) = self.lines.get(i) else {
            return Vec::new();
        };
        match *line {
            Line::Text(t) => self.texts[t as usize].clone(),
            Line::Open(n) | Line::Folded(n) | Line::Leaf(n) => {
                let node = &self.nodes[n as usize];
                let mut s: Spans = Vec::new();
                let indent = "  ".repeat(node.depth as usize);
                let glyph = match line {
                    Line::Open(_) => "▾ ",
                    Line::Folded(_) => "▸ ",
                    _ => "  ",
                };
                s.push((format!("{indent}{glyph}"), Cls::Dim));
                if let Some(k) = &node.key {
                    if node.quoted {
                        s.push((
                            serde_json::to_string(k).unwrap_or_else(|_| k.clone()),
                            Cls::Key,
                        ));
                        s.push((": ".into(), Cls::Punct));
                    } else {
                        s.push((k.clone(), Cls::Head));
                        s.push((" ".into(), Cls::Punct));
                    }
                }
                let comma = if node.last { "" } else { "," };
                match (&node.kind, line) {
                    (NodeKind::Scalar(v, c), _) => {
                        s.push((v.clone(), *c));
                        s.push((comma.into(), Cls::Punct));
                    }
                    (NodeKind::Object(0), _) => s.push((format!("{{}}{comma}"), Cls::Punct)),
                    (NodeKind::Array(0), _) => s.push((format!("[]{comma}"), Cls::Punct)),
                    (NodeKind::Object(k), Line::Folded(_)) => {
                        s.push((format!("{{…}}{comma}"), Cls::Punct));
                        s.push((
                            format!("  {k} key{}", if *k == 1 { "" } else { "s" }),
                            Cls::Dim,
                        ));
                    }
                    (NodeKind::Array(k), Line::Folded(_)) => {
                        s.push((format!("[…]{comma}"), Cls::Punct));
                        s.push((
                            format!("  {k} item{}", if *k == 1 { "" } else { "s" }),
                            Cls::Dim,
                        ));
                    }
                    (NodeKind::Object(_), _) => s.push(("{".into(), Cls::Punct)),
                    (NodeKind::Array(_), _) => s.push(("[".into(), Cls::Punct)),
                }
                s
            }
            Line::Close(n) => {
                let node = &self.nodes[n as usize];
                let indent = "  ".repeat(node.depth as usize);
                let comma = if node.last { "" } else { "," };
                let c = if matches!(node.kind, NodeKind::Object(_)) {
                    "}"
                } else {
                    "]"
                };
                vec![(format!("{indent}  {c}{comma}"), Cls::Punct)]
            }
        }
    }

    /// All visible lines as plain text (for tests and copying).
    pub fn plain_lines(&self) -> Vec<String> {
        (0..self.len())
            .map(|i| self.spans(i).into_iter().map(|(s, _)| s).collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn folds_and_unfolds() {
        let mut d = Doc::new();
        d.line("head", Cls::Head);
        d.json("msg", &json!({"a": 1, "b": [1, 2], "c": {}}));
        assert_eq!(
            d.plain_lines(),
            vec![
                "head",
                "▾ msg {",
                "    \"a\": 1,",
                "  ▾ \"b\": [",
                "      1,",
                "      2",
                "    ],",
                "    \"c\": {}",
                "  }",
            ]
        );
        d.cursor = 3;
        d.toggle();
        assert_eq!(d.plain_lines()[3], "  ▸ \"b\": […],  2 items");
        assert_eq!(d.len(), 6);
        d.unfold();
        assert_eq!(d.len(), 9);
        d.cursor = 4; // leaf inside b: fold goes to b
        d.fold();
        assert_eq!(d.cursor, 3);
        d.collapse_all();
        assert_eq!(d.len(), 6);
        d.expand_all();
        assert_eq!(d.len(), 9);
    }

    #[test]
    fn big_containers_start_folded() {
        let big: serde_json::Map<String, Value> =
            (0..40).map(|i| (format!("K{i}"), json!(i))).collect();
        let mut d = Doc::new();
        d.json("m", &json!([{"id": 0, "env": big}]));
        let lines = d.plain_lines();
        assert!(
            lines.iter().any(|l| l.contains("\"env\": {…}")),
            "{lines:?}"
        );
    }
}
