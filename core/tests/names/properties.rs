//! Property tests: what an accepted name guarantees, for any input.

use proptest::prelude::*;
use shmgate_core::{Errno, NAME_MAX, NameError, SHM_DIR, ShmName, ShmPath};

/// Bytes weighted towards the ones the rules care about.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => b'a'..=b'z',
        2 => Just(b'/'),
        2 => Just(b'.'),
        1 => Just(0u8),
        1 => 0x01u8..=0x1f,
        1 => Just(0x7fu8),
        1 => 0x80u8..=0xff,
        1 => any::<u8>(),
    ]
}

fn raw_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(interesting_byte(), 0..8),
        prop::collection::vec(interesting_byte(), 240..270),
        prop::collection::vec(any::<u8>(), 0..600),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// An accepted name gives a path with exactly one component below
    /// `/dev/shm/`, never `.` or `..`, that round-trips through `CStr`.
    #[test]
    fn accepted_name_gives_one_component_path(raw in raw_name()) {
        if let Ok(name) = ShmName::new(&raw) {
            let path = ShmPath::new(&name);
            let bytes = path.as_bytes();
            prop_assert!(bytes.starts_with(SHM_DIR.as_bytes()));
            let component = &bytes[SHM_DIR.len()..];
            prop_assert_eq!(component, name.as_bytes());
            prop_assert!(!component.is_empty() && component.len() <= NAME_MAX);
            prop_assert!(!component.contains(&b'/'));
            prop_assert!(component != b"." && component != b"..");
            prop_assert!(!component.iter().any(|&b| b < 0x20 || b == 0x7f));
            prop_assert_eq!(path.as_c_str().to_bytes(), bytes);
            prop_assert_eq!(path.name(), name.as_bytes());
            // The normalised name is a suffix of the input: only slashes went.
            prop_assert!(raw.ends_with(component));
            prop_assert!(raw[..raw.len() - component.len()].iter().all(|&b| b == b'/'));
        }
    }

    /// Normalising a normalised name changes nothing.
    #[test]
    fn normalisation_is_idempotent(raw in raw_name()) {
        if let Ok(name) = ShmName::new(&raw) {
            let again = ShmName::new(name.as_bytes()).expect("a normal name stays valid");
            prop_assert_eq!(again.as_bytes(), name.as_bytes());
        }
    }

    /// Leading slashes never change the verdict or the result.
    #[test]
    fn leading_slashes_are_irrelevant(raw in raw_name(), slashes in 1usize..300) {
        let mut slashed = vec![b'/'; slashes];
        slashed.extend_from_slice(&raw);
        let a = ShmName::new(&raw).map(|n| n.as_bytes().to_vec());
        let b = ShmName::new(&slashed).map(|n| n.as_bytes().to_vec());
        prop_assert_eq!(a, b);
    }

    /// Any input is decided without panicking, and the errno matches the
    /// variant.
    #[test]
    fn no_input_panics(raw in prop::collection::vec(any::<u8>(), 0..5000)) {
        match ShmName::new(&raw) {
            Ok(name) => { let _ = ShmPath::new(&name); }
            Err(e) => {
                let want = if e == NameError::TooLong { Errno::NAMETOOLONG } else { Errno::INVAL };
                prop_assert_eq!(Errno::from(e), want);
            }
        }
    }
}
