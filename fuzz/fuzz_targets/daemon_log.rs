//! Arbitrary text (lossily decoded bytes) through the daemon-log parser: no panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let parsed = pm2_trace::pm2::daemon_log::parse(line);
        let _ = parsed.describe();
    }
});
