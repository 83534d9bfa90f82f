//! Ways to present a timeline and its findings: text, JSON and the interactive TUI.
pub mod json;
pub mod text;
pub mod tui;

/// `pm2-trace replay FILE`. (Temporary: prints the stored events until the timeline lands.)
pub fn replay(path: &std::path::Path, _json: bool) -> anyhow::Result<std::process::ExitCode> {
    let text = std::fs::read_to_string(path)?;
    for line in text.lines() {
        println!("{line}");
    }
    Ok(std::process::ExitCode::SUCCESS)
}
