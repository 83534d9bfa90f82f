//! The live text view of `record`: the timeline as it is recorded, then the findings.

use crate::event::CaptureInfo;

/// Prints the timeline while recording, with the same text view as replay, and the
/// findings at the end.
pub struct LiveText<W: std::io::Write> {
    out: W,
    state: Option<(
        crate::views::text::TextView<Vec<u8>>,
        crate::timeline::Timeline,
    )>,
}

impl<W: std::io::Write> LiveText<W> {
    pub fn new(out: W) -> Self {
        LiveText { out, state: None }
    }

    pub fn event(&mut self, info: &CaptureInfo, entries: &[crate::timeline::Entry]) {
        use std::io::IsTerminal;
        let (view, tl) = self.state.get_or_insert_with(|| {
            let color = crate::views::text::color_wanted(std::io::stdout().is_terminal());
            let mut view = crate::views::text::TextView::new(Vec::new(), info, color);
            let _ = view.header();
            (view, crate::timeline::Timeline::new(info))
        });
        for e in entries {
            tl.apply(e);
            let _ = view.entry(e);
        }
        let bytes = view.out_mut();
        let _ = self.out.write_all(bytes);
        bytes.clear();
        let _ = self.out.flush();
    }

    /// Print the findings of what was recorded.
    pub fn finish(mut self) {
        if let Some((mut view, tl)) = self.state.take() {
            let _ = view.findings(&crate::rules::analyze(&tl));
            let _ = self.out.write_all(view.out_mut());
        }
        let _ = self.out.flush();
    }
}
