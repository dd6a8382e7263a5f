//! Echo guest, for native-to-guest exchange: reads the message a native
//! program left in segment NAME (header layout, READY state), and writes
//! it back reversed into segment REPLY, which it creates.
//!
//! Usage (create rights needed): `echo NAME REPLY`

use shmgate_example_guests::{FNV_START, fnv1a, layout};
use shmgate_guest::{Errno, OpenOptions, Segment};

fn run(name: &str, reply: &str) -> Result<usize, Errno> {
    let inbox = Segment::open(name, &OpenOptions::new())?;
    let mut word = [0; 8];
    inbox.read_exact_at(&mut word, layout::STATE)?;
    if u64::from_le_bytes(word) != layout::READY {
        return Err(Errno::AGAIN);
    }
    inbox.read_exact_at(&mut word, layout::LEN)?;
    let len = usize::try_from(u64::from_le_bytes(word)).map_err(|_| Errno::FBIG)?;
    let mut msg = vec![0; len];
    inbox.read_exact_at(&mut msg, layout::PAYLOAD)?;
    msg.reverse();

    let out = Segment::create(reply, layout::PAYLOAD + len as u64)?;
    out.write_all_at(&msg, layout::PAYLOAD)?;
    out.write_all_at(layout::MAGIC, 0)?;
    out.write_all_at(&(len as u64).to_le_bytes(), layout::LEN)?;
    out.write_all_at(&fnv1a(FNV_START, &msg).to_le_bytes(), layout::CHECKSUM)?;
    out.write_all_at(&layout::READY.to_le_bytes(), layout::STATE)?;
    Ok(len)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(reply)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: echo NAME REPLY");
        std::process::exit(64);
    };
    match run(name, reply) {
        Ok(n) => println!("echo: reversed {n} bytes from {name:?} into {reply:?}"),
        Err(e) => {
            eprintln!("echo: {e}");
            std::process::exit(1);
        }
    }
}
