//! Random bytes, split at a fuzzer-chosen point, through the streaming AMP decoder and the
//! RPC/bus interpretation: no panic, no allocation beyond the limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pm2_trace::pm2::meaning::{BusEvent, Pm2Call};
use pm2_trace::wire::{amp::Decoder, rpc};

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| *b as usize).min(data.len());
    let mut d = Decoder::new(1 << 16);
    for chunk in [&data[..cut], &data[cut..]] {
        d.push(chunk);
        while let Some(m) = d.next() {
            if let Ok(m) = m {
                if let Some(c) = rpc::parse_call(&m) {
                    let _ = Pm2Call::from_call(&c);
                }
                let _ = rpc::parse_reply(&m);
                let _ = BusEvent::from_message(&m);
            }
        }
    }
});
