//! Rules on the recorded fixtures (tests/fixtures) and on small synthetic timelines.

use super::*;
use crate::timeline::tests::load_fixture;

fn fixture_findings(name: &str) -> Vec<Finding> {
    let (info, events) = load_fixture(name);
    let tl = crate::timeline::replay(&info, events, |_| Ok::<(), ()>(())).unwrap();
    analyze(&tl)
}

#[test]
fn print_fixtures() {
    for f in ["pm2-5.4.3", "pm2-7.0.4"] {
        for x in fixture_findings(f) {
            println!(
                "{f}: {} {} {:?}: {}\n  {:#?}\n  {}",
                x.severity.name(),
                x.kind,
                x.app,
                x.summary,
                x.chain,
                x.remedy
            );
        }
    }
}
