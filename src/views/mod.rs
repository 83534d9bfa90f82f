//! Ways to present a timeline and its findings: text, JSON and the interactive TUI.
pub mod json;
pub mod text;
pub mod tui;

/// `pm2-trace replay FILE`. (Temporary: prints the stored events until the timeline lands.)
pub fn replay(path: &std::path::Path, _json: bool) -> anyhow::Result<std::process::ExitCode> {
    let mut reader = crate::capture::CaptureReader::open(path)?;
    println!("{}", serde_json::to_string(reader.info())?);
    for ev in reader.by_ref() {
        println!("{}", serde_json::to_string(&ev?)?);
    }
    if let Some(t) = reader.truncated() {
        eprintln!("pm2-trace: {} is truncated at byte {}: replayed the {} whole records before it", path.display(), t.offset, t.records);
    }
    Ok(std::process::ExitCode::SUCCESS)
}
