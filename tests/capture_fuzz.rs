//! Hostile input: random bytes, bit flips and lying length fields never panic and never make
//! the reader allocate without bound. A counting allocator records the largest single
//! allocation made on the reading thread while the reader runs.

mod capture_util;

use capture_util::*;
use pm2_trace::capture::{CaptureReader, MAX_BLOCK_LEN};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::OnceLock;

struct Tracking;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static MAX: Cell<usize> = const { Cell::new(0) };
    /// Bytes allocated minus freed on this thread while tracking, and its high-water mark.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACK.try_with(|t| {
        if t.get() {
            let _ = MAX.try_with(|m| m.set(m.get().max(size)));
        }
    });
    live(size as isize);
}

fn live(delta: isize) {
    let _ = TRACK.try_with(|t| {
        if t.get() {
            let _ = LIVE.try_with(|l| {
                l.set(l.get() + delta);
                let _ = PEAK.try_with(|p| p.set(p.get().max(l.get())));
            });
        }
    });
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new);
        live(-(l.size() as isize));
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        live(-(l.size() as isize));
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// Open and read everything; returns (events, errors, largest allocation).
fn read_tracked(path: &Path) -> (usize, usize, usize) {
    MAX.with(|m| m.set(0));
    TRACK.with(|t| t.set(true));
    let (mut ok, mut errs) = (0, 0);
    match CaptureReader::open(path) {
        Ok(r) => {
            for item in r {
                match item {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        errs += 1;
                        assert!(e.to_string().contains("at byte"), "{e}");
                    }
                }
            }
        }
        Err(e) => {
            errs += 1;
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()) && msg.contains("byte"),
                "{msg}"
            );
        }
    }
    TRACK.with(|t| t.set(false));
    (ok, errs, MAX.with(|m| m.get()))
}

fn valid_capture() -> &'static Vec<u8> {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("valid.pcapng");
        write_capture(&path, &all_events());
        let mut bytes = std::fs::read(&path).unwrap();
        // A record in three small fragments (the writer only fragments records bigger than
        // a packet; the reader accepts any split), so mutations reach the reassembly too.
        let json = serde_json::to_vec(&all_events()[6]).unwrap();
        let parts: Vec<&[u8]> = json.chunks(json.len() / 3 + 1).collect();
        for (i, part) in parts.iter().enumerate() {
            let mut data = vec![0, 12, 0, 4];
            data.extend_from_slice(b"data");
            data.extend_from_slice(&[0, 0, 0, 0]);
            data.extend_from_slice(b"PM2TFRAG");
            data.extend_from_slice(&(i as u32).to_be_bytes());
            data.extend_from_slice(&(parts.len() as u32).to_be_bytes());
            data.extend_from_slice(&(json.len() as u32).to_be_bytes());
            data.extend_from_slice(part);
            bytes.extend(epb_block(1, &data));
        }
        bytes
    })
}

fn epb_block(interface: u32, data: &[u8]) -> Vec<u8> {
    let padded = data.len().div_ceil(4) * 4;
    let len = (12 + 20 + padded) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(&6u32.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&interface.to_le_bytes());
    b.extend_from_slice(&[0u8; 8]);
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(data);
    b.resize(8 + 20 + padded, 0);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

#[test]
fn the_fuzzing_seed_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.pcapng");
    std::fs::write(&path, valid_capture()).unwrap();
    let (r, back) = read_all(&path);
    let mut expect = all_events();
    expect.push(expect[6].clone());
    assert_eq!(back, expect);
    assert_eq!(r.truncated(), None);
}

/// An allocation bound for inputs of `len` bytes: the read buffer (at least 4 KiB, grown
/// only as bytes arrive) and decoded JSON, all proportional to the input.
fn bound(len: usize) -> usize {
    64 * 1024 + 8 * len
}

fn check(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.pcapng");
    std::fs::write(&path, bytes).unwrap();
    let (_, _, max) = read_tracked(&path);
    assert!(
        max <= bound(bytes.len()),
        "largest allocation {max} for {} input bytes",
        bytes.len()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check(&bytes);
    }

    #[test]
    fn random_bytes_after_a_valid_header(tail in proptest::collection::vec(any::<u8>(), 0..4096), keep in 0usize..2000) {
        let v = valid_capture();
        let mut bytes = v[..keep.min(v.len())].to_vec();
        bytes.extend(tail);
        check(&bytes);
    }

    #[test]
    fn bit_flips(flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..16), cut in any::<prop::sample::Index>()) {
        let mut bytes = valid_capture().clone();
        for (i, bit) in flips {
            let at = i.index(bytes.len());
            bytes[at] ^= 1 << bit;
        }
        if cut.index(4) == 0 {
            let n = cut.index(bytes.len());
            bytes.truncate(n);
        }
        check(&bytes);
    }

    #[test]
    fn overwritten_words(words in proptest::collection::vec((any::<prop::sample::Index>(), any::<u32>()), 1..6)) {
        // Lengths, counts and tags replaced by arbitrary 32-bit values.
        let mut bytes = valid_capture().clone();
        for (i, w) in words {
            let at = i.index(bytes.len() - 4) & !3;
            bytes[at..at + 4].copy_from_slice(&w.to_le_bytes());
        }
        check(&bytes);
    }
}

#[test]
fn lying_block_lengths_do_not_allocate() {
    let v = valid_capture();
    // A packet block claiming almost the maximum length, in a file that has 12 bytes of it.
    for claim in [
        MAX_BLOCK_LEN as u32 - 4,
        MAX_BLOCK_LEN as u32 + 4,
        u32::MAX - 3,
        0x7FFF_FFFC,
    ] {
        let mut bytes = v.clone();
        bytes.extend_from_slice(&6u32.to_le_bytes());
        bytes.extend_from_slice(&claim.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 4]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lie.pcapng");
        std::fs::write(&path, &bytes).unwrap();
        let (ok, errs, max) = read_tracked(&path);
        assert_eq!(ok, all_events().len() + 1);
        assert_eq!(
            errs,
            usize::from(claim as usize > MAX_BLOCK_LEN),
            "claim {claim}"
        );
        assert!(max < 256 * 1024, "claim {claim}: allocated {max}");
        // Truncated, not an allocation of the claimed size.
        if claim as usize <= MAX_BLOCK_LEN {
            let mut r = CaptureReader::open(&path).unwrap();
            r.by_ref().for_each(drop);
            assert_eq!(r.truncated().map(|t| t.offset), Some(v.len() as u64));
        }
    }
}

#[test]
fn lying_fragment_header_does_not_allocate() {
    // A first fragment claiming a 16 MiB record, then the file ends.
    let v = valid_capture();
    let mut data = Vec::new();
    data.extend_from_slice(&[0, 12, 0, 4]);
    data.extend_from_slice(b"data");
    data.extend_from_slice(&[0, 0, 0, 0]);
    data.extend_from_slice(b"PM2TFRAG");
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(&1000u32.to_be_bytes());
    data.extend_from_slice(&(16u32 * 1024 * 1024).to_be_bytes());
    data.extend_from_slice(b"{\"t\":1");
    data.resize(data.len().div_ceil(4) * 4, b' ');
    let mut body = Vec::new();
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&[0u8; 8]);
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&data);
    let len = (12 + body.len()) as u32;
    let mut bytes = v.clone();
    bytes.extend_from_slice(&6u32.to_le_bytes());
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&body);
    bytes.extend_from_slice(&len.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frag.pcapng");
    std::fs::write(&path, &bytes).unwrap();
    let (ok, errs, max) = read_tracked(&path);
    assert_eq!((ok, errs), (all_events().len() + 1, 0));
    assert!(max < 256 * 1024, "allocated {max}");
    let mut r = CaptureReader::open(&path).unwrap();
    r.by_ref().for_each(drop);
    assert_eq!(
        r.truncated().map(|t| t.offset),
        Some(v.len() as u64),
        "incomplete record reported as truncation"
    );
}

/// Peak bytes held on this thread while opening and reading all of `path`.
fn peak_while_reading(path: &Path) -> (u64, isize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    TRACK.with(|t| t.set(true));
    let mut n = 0u64;
    {
        let r = CaptureReader::open(path).unwrap();
        for ev in r {
            // Events are handed over, not kept: drop each one.
            drop(ev.unwrap());
            n += 1;
        }
    }
    TRACK.with(|t| t.set(false));
    (n, PEAK.with(|p| p.get()))
}

#[test]
fn memory_does_not_grow_with_file_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut peaks = Vec::new();
    for n in [2_000usize, 100_000] {
        let path = dir.path().join(format!("{n}.pcapng"));
        let events = all_events();
        let mut w =
            pm2_trace::capture::CaptureWriter::create(&path, &sample_info(), false).unwrap();
        for i in 0..n {
            w.write(&events[i % events.len()], "c").unwrap();
        }
        let size = w.finish().unwrap().bytes;
        let (read, peak) = peak_while_reading(&path);
        assert_eq!(read, n as u64);
        eprintln!("{n} events, {size} bytes: peak {peak} bytes held while reading");
        peaks.push((size, peak));
    }
    let (small, big) = (peaks[0], peaks[1]);
    assert!(big.0 > 10 * small.0, "the big capture is much bigger");
    // One read buffer (at most 1 MiB for files this size) plus one event at a time.
    assert!(
        big.1 < 2 * 1024 * 1024,
        "peak {} bytes for a {}-byte capture",
        big.1,
        big.0
    );
    assert!(
        big.1 <= small.1 + 1024 * 1024,
        "memory grew with file size: {small:?} -> {big:?}"
    );
}
