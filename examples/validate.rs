//! Checks shared memory names the way every shmgate open does, and prints
//! the path each would open or the errno it would fail with.
//!
//! ```text
//! cargo run -p shmgate-examples --example validate -- /jobs ../etc/passwd .. ""
//! ```

use std::os::unix::ffi::OsStrExt;

use shmgate_core::{Errno, ShmName, ShmPath};

fn main() {
    let names: Vec<_> = std::env::args_os().skip(1).collect();
    if names.is_empty() {
        eprintln!("usage: validate NAME...");
        std::process::exit(64);
    }
    let mut refused = 0;
    for raw in &names {
        let shown = raw.to_string_lossy();
        match ShmName::new(raw.as_bytes()) {
            Ok(name) => println!("{shown:?}: ok, {}", ShmPath::new(&name)),
            Err(e) => {
                refused += 1;
                println!("{shown:?}: {e}: {}", Errno::from(e));
            }
        }
    }
    std::process::exit(if refused == 0 { 0 } else { 1 });
}
