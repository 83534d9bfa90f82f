//! The typed fast route of `ProcFacts::of` reads the same facts as the serialized route, for
//! every process event in every shipped capture.

use pm2_trace::capture::CaptureReader;
use pm2_trace::event::Event;
use pm2_trace::timeline::ProcFacts;

#[test]
fn typed_and_serialized_facts_agree_on_every_shipped_capture() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "bin") {
            continue;
        }
        for ev in CaptureReader::open(&path).unwrap() {
            if let Event::Proc(p) = ev.unwrap().event {
                let slow = ProcFacts::from_value(&serde_json::to_value(&p).unwrap());
                assert_eq!(ProcFacts::of(&p), slow, "{}: {p:?}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "only {checked} process events checked");
}
