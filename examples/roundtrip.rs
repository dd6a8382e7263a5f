//! Two processes, one segment: the parent creates a uniquely named segment,
//! writes a message and its checksum, and runs a second copy of this
//! program, which opens the segment read-only by name, checks the message
//! and prints it. The parent then checks the child's exit status and what
//! it printed; the segment is unlinked when its owner guard drops, so
//! `/dev/shm` is left as it was found.
//!
//! ```text
//! cargo run -p shmgate-examples --example roundtrip
//! ```
//!
//! Exits with status 1 on any failure.
//!
//! # Layout of the segment
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `SHMGATE1` |
//! | 8 | 4 | message length, little-endian `u32` |
//! | 12 | 8 | FNV-1a 64 checksum of the message, little-endian |
//! | 20 | length | the message, UTF-8 |

use std::error::Error;
use std::ffi::OsString;
use std::process::{Command, ExitCode};

use shmgate_host::{Errno, OpenOptions, Segment};

/// The argument that makes this program the reading child.
const READ_ARG: &str = "--read";
const MAGIC: &[u8; 8] = b"SHMGATE1";
const HEADER_LEN: usize = 20;
const SEGMENT_SIZE: u64 = 4096;

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// FNV-1a, 64 bits: enough to notice a torn or misplaced message.
fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let result = match args.as_slice() {
        [] => parent(),
        [flag, name] if flag == READ_ARG => child(name),
        _ => Err(format!("usage: roundtrip [{READ_ARG} NAME]").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roundtrip: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Creates the segment, writes the message, runs the child and checks it.
fn parent() -> Result<()> {
    let name = format!("/shmgate-roundtrip-{}", std::process::id());
    let message = format!("hello from process {} through {name}", std::process::id());
    let len = u32::try_from(message.len())?;
    let sum = checksum(message.as_bytes());

    // Created exclusively (never someone else's object), unlinked on drop,
    // including on every early return below.
    let seg = OpenOptions::new().size(SEGMENT_SIZE).open_owned(&name)?;
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&len.to_le_bytes());
    header[12..].copy_from_slice(&sum.to_le_bytes());
    seg.write_all_at(&header, 0)?;
    seg.write_all_at(message.as_bytes(), HEADER_LEN as u64)?;
    println!("parent: created {name} ({SEGMENT_SIZE} bytes)");
    println!("parent: wrote {len} bytes, checksum {sum:#018x}: {message:?}");

    let exe = std::env::current_exe()?;
    let out = Command::new(&exe).arg(READ_ARG).arg(&name).output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("  {line}");
    }
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        println!("  {line}");
    }
    if !out.status.success() {
        return Err(format!("the child failed: {}", out.status).into());
    }
    let echoed = format!("child: read {message:?}");
    if !String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l == echoed)
    {
        return Err("the child exited successfully but did not report the message".into());
    }
    println!("parent: the child read the message back ({})", out.status);

    drop(seg);
    match Segment::open_read_only(&name) {
        Err(e) if e.errno() == Errno::NOENT => {
            println!("parent: unlinked {name}; /dev/shm is as it was");
            Ok(())
        }
        Err(e) => Err(format!("checking that {name} is gone: {e}").into()),
        Ok(_) => Err(format!("{name} still exists after its owner dropped").into()),
    }
}

/// Opens `name` read-only, checks the header and checksum, prints the message.
fn child(name: &OsString) -> Result<()> {
    let name = name.as_encoded_bytes();
    let seg = Segment::open_read_only(name)?;
    let size = seg.len()?;
    println!(
        "child: opened {} read-only ({size} bytes)",
        seg.name().escape_ascii()
    );

    // Read through a read-only mapping of the whole segment.
    let map = seg.map()?;
    let mut header = [0u8; HEADER_LEN];
    map.read_at(0, &mut header)?;
    if &header[..8] != MAGIC {
        return Err(format!("bad magic {:?}", header[..8].escape_ascii().to_string()).into());
    }
    let len = u32::from_le_bytes(header[8..12].try_into()?);
    let want = u64::from_le_bytes(header[12..].try_into()?);
    let len = usize::try_from(len)?;
    if len > map.len().saturating_sub(HEADER_LEN) {
        return Err(format!("message length {len} does not fit the segment").into());
    }
    let mut message = vec![0u8; len];
    map.read_at(HEADER_LEN, &mut message)?;
    let got = checksum(&message);
    if got != want {
        return Err(format!("checksum {got:#018x}, the header says {want:#018x}").into());
    }
    let message = String::from_utf8(message)?;
    println!("child: checksum {got:#018x} ok");
    println!("child: read {message:?}");

    // The read-only open is enforced by the kernel, not just by the API.
    match seg.write_at(b"x", 0) {
        Err(e) if e.errno() == Errno::BADF => println!("child: writing is refused: {e}"),
        Err(e) => return Err(format!("a write failed oddly: {e}").into()),
        Ok(_) => return Err("a read-only segment accepted a write".into()),
    }
    Ok(())
}
