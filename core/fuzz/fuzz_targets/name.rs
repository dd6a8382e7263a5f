//! Fuzzes `ShmName::new` + `ShmPath::new`: no input may panic, and an
//! accepted name must give a one-component path under `/dev/shm/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmgate_core::{NAME_MAX, SHM_DIR, ShmName, ShmPath};

fuzz_target!(|raw: &[u8]| {
    let Ok(name) = ShmName::new(raw) else { return };
    let path = ShmPath::new(&name);
    let bytes = path.as_bytes();
    assert!(bytes.starts_with(SHM_DIR.as_bytes()));
    let component = &bytes[SHM_DIR.len()..];
    assert!(!component.is_empty() && component.len() <= NAME_MAX);
    assert!(!component.contains(&b'/'));
    assert!(component != b"." && component != b"..");
    assert!(!component.iter().any(|&b| b < 0x20 || b == 0x7f));
    assert_eq!(path.as_c_str().to_bytes(), bytes);
    assert!(raw.ends_with(component));
});
