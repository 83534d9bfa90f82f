//! Capture files: round trip, file creation rules, big records, forward compatibility.

mod capture_util;

use capture_util::*;
use pm2_trace::capture::{
    CaptureError, CaptureReader, CaptureWriter, MAX_PACKET_LEN, MAX_RECORD_LEN,
};
use pm2_trace::event::{Event, NoteLevel, Source, Stamped};
use std::os::unix::fs::PermissionsExt;

#[test]
fn every_event_kind_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.pcapng");
    let events = all_events();
    write_capture(&path, &events);
    let (r, back) = read_all(&path);
    assert_eq!(back, events);
    assert_eq!(r.info(), &sample_info());
    assert_eq!(r.truncated(), None);
    assert_eq!(r.skipped(), 0);
    assert_eq!(r.records(), events.len() as u64);
    assert_eq!(r.offset(), std::fs::metadata(&path).unwrap().len());
    let h = r.section_header();
    assert_eq!(
        h.user_appl.as_deref(),
        Some(concat!("pm2-trace ", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(h.os.as_deref(), Some("Linux 6.1.0-test x86_64"));
    assert_eq!(h.hardware.as_deref(), Some("testhost"));
}

#[test]
fn summary_counts_records_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.pcapng");
    let events = all_events();
    let mut w = CaptureWriter::create(&path, &sample_info(), false).unwrap();
    for ev in &events {
        w.write(ev, "c").unwrap();
    }
    let s = w.finish().unwrap();
    assert_eq!(s.records, events.len() as u64);
    assert_eq!(s.bytes, std::fs::metadata(&path).unwrap().len());
    assert_eq!(s.stopped, None);
}

#[test]
fn file_is_created_0600_and_never_clobbered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.pcapng");
    // Even with a permissive umask the file is private from the first byte.
    let old = unsafe { libc::umask(0) };
    let w = CaptureWriter::create(&path, &sample_info(), false);
    unsafe { libc::umask(old) };
    let w = w.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "capture mode {mode:o}");
    w.finish().unwrap();

    // Exists: refused without overwrite, and the message names the path.
    let err = CaptureWriter::create(&path, &sample_info(), false).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("already exists"),
        "{msg}"
    );

    // Overwrite: an existing 0644 file becomes 0600 and is replaced.
    std::fs::write(&path, b"old contents").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let w = CaptureWriter::create(&path, &sample_info(), true).unwrap();
    w.finish().unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (_, evs) = read_all(&path);
    assert!(evs.is_empty());
}

#[test]
fn symlinks_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, b"precious").unwrap();
    let link = dir.path().join("link.pcapng");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for overwrite in [false, true] {
        let err = CaptureWriter::create(&link, &sample_info(), overwrite).unwrap_err();
        assert!(
            err.to_string().contains(&link.display().to_string()),
            "{err}"
        );
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    // A dangling symlink is not followed either.
    let dangling = dir.path().join("dangling.pcapng");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    assert!(CaptureWriter::create(&dangling, &sample_info(), true).is_err());
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn fifo_is_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // O_NONBLOCK write-open of a FIFO without a reader fails (ENXIO) instead of blocking.
    let err = CaptureWriter::create(&fifo, &sample_info(), true).unwrap_err();
    assert!(
        err.to_string().contains(&fifo.display().to_string()),
        "{err}"
    );
}

fn big_note(len: usize) -> Stamped {
    // Not all ASCII, so fragment boundaries fall inside multi-byte characters too.
    let text: String = "αβγ-0123456789 ".chars().cycle().take(len).collect();
    Stamped {
        t: MONO_REF + 5,
        event: Event::Note {
            level: NoteLevel::Info,
            text,
        },
    }
}

#[test]
fn records_bigger_than_a_packet_are_fragmented_and_reassembled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.pcapng");
    let mut events = all_events();
    events.insert(3, big_note(3 * MAX_PACKET_LEN + 1234));
    events.insert(5, big_note(MAX_PACKET_LEN - 200)); // just around one packet
    events.push(big_note(5 * 1024 * 1024));
    write_capture(&path, &events);
    let (r, back) = read_all(&path);
    assert_eq!(back.len(), events.len());
    assert!(back == events, "fragmented records differ after reassembly");
    assert_eq!(r.skipped(), 0);
}

#[test]
fn oversized_record_is_refused_and_capture_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.pcapng");
    let mut w = CaptureWriter::create(&path, &sample_info(), false).unwrap();
    let evs = all_events();
    w.write(&evs[0], "before").unwrap();
    let err = w.write(&big_note(MAX_RECORD_LEN + 10), "huge").unwrap_err();
    assert!(matches!(err, CaptureError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
    w.write(&evs[1], "after").unwrap();
    let s = w.finish().unwrap();
    assert_eq!(s.records, 2);
    assert_eq!(s.too_large, 1);
    let (_, back) = read_all(&path);
    assert_eq!(back, vec![evs[0].clone(), evs[1].clone()]);
}

#[test]
fn long_comments_are_clipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("comment.pcapng");
    let mut w = CaptureWriter::create(&path, &sample_info(), false).unwrap();
    let ev = &all_events()[0];
    w.write(ev, &"x".repeat(200_000)).unwrap();
    w.finish().unwrap();
    let (_, back) = read_all(&path);
    assert_eq!(&back, std::slice::from_ref(ev));
}

#[test]
fn drop_without_finish_keeps_buffered_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drop.pcapng");
    let events = all_events();
    {
        let mut w = CaptureWriter::create(&path, &sample_info(), false).unwrap();
        for ev in &events {
            w.write(ev, "c").unwrap();
        }
    }
    let (r, back) = read_all(&path);
    assert_eq!(back, events);
    assert_eq!(r.truncated(), None);
}

#[test]
fn every_source_has_its_interface_in_order() {
    // The interface id of each packet is the index of its source in Source::ALL; check it
    // on the raw file: the first EPB after the info record carries a Proc event.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("if.pcapng");
    let proc_ev = all_events()
        .into_iter()
        .find(|e| e.event.source() == Source::Proc)
        .unwrap();
    let info_only = dir.path().join("info.pcapng");
    write_capture(&info_only, &[]);
    write_capture(&path, std::slice::from_ref(&proc_ev));
    let base = std::fs::metadata(&info_only).unwrap().len() as usize;
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        u32::from_le_bytes(bytes[base..base + 4].try_into().unwrap()),
        6,
        "EPB type"
    );
    let iface = u32::from_le_bytes(bytes[base + 8..base + 12].try_into().unwrap());
    assert_eq!(
        iface,
        Source::ALL.iter().position(|s| *s == Source::Proc).unwrap() as u32
    );
}

#[test]
fn open_errors_name_path_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "empty"),
        (
            "text",
            b"hello, this is not a capture file at all\n".to_vec(),
            "not a pcapng capture",
        ),
        (
            "pcap",
            vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "classic pcap",
        ),
        (
            "bigendian",
            vec![
                0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 28, 0x1a, 0x2b, 0x3c, 0x4d, 0, 1, 0, 0, 0xff,
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 28,
            ],
            "big-endian",
        ),
    ];
    for (name, bytes, expect) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let err = CaptureReader::open(&path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("at byte 0"), "{msg}");
        assert!(msg.contains(expect), "{name}: {msg}");
    }
    let missing = dir.path().join("missing");
    let msg = CaptureReader::open(&missing).unwrap_err().to_string();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
}

/// Pages of `path` in the page cache, in `range` (bytes), counted with mincore on a mapping.
fn resident_pages(path: &std::path::Path, range: std::ops::Range<u64>) -> usize {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    let page = 4096u64;
    let len = (range.end - range.start) as usize;
    // SAFETY: a read-only shared mapping of a file we opened, unmapped before returning;
    // mincore writes one byte per page into a vector of that many bytes.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            range.start as libc::off_t,
        );
        assert_ne!(map, libc::MAP_FAILED, "mmap of {}", path.display());
        let mut vec = vec![0u8; len.div_ceil(page as usize)];
        let rc = libc::mincore(map, len, vec.as_mut_ptr());
        libc::munmap(map, len);
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|b| **b & 1 == 1).count()
    }
}

/// A capture does not keep the host's page cache: its bytes go to the disk directly
/// (`O_DIRECT`), so what is written, even on disk already, is not cached, nor is the file
/// after finish. The file is in the build's directory (a disk file system).
#[test]
fn a_capture_is_written_around_the_page_cache() {
    const MB: u64 = 1 << 20;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("direct.pcapng");
    let mut w = CaptureWriter::create(&path, &sample_info(), false).unwrap();
    let note = big_note(1 << 20);
    while w.committed() < 20 * MB {
        w.write(&note, "").unwrap();
    }
    w.flush();
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
    let cached = resident_pages(&path, 0..16 * MB);
    assert!(
        cached < 256,
        "the first 16 MB, written, should not be in the page cache: {cached} of 4096 pages are (needs O_DIRECT on a disk file system under {})",
        env!("CARGO_TARGET_TMPDIR")
    );
    while w.committed() < 34 * MB {
        w.write(&note, "").unwrap();
    }
    let s = w.finish().unwrap();
    let all = resident_pages(&path, 0..s.bytes / 4096 * 4096);
    assert!(
        all < 256,
        "after finish {all} pages of the capture stay cached"
    );
    let (_, back) = read_all(&path);
    assert!(back.len() > 20, "{} events read back", back.len());
}
