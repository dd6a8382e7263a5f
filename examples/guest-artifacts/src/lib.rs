//! Paths of the example guests (`examples/guests`), compiled to
//! `wasm32-wasip1` by this crate's build script whenever they, the guest
//! SDK or the core change.
//!
//! ```
//! assert!(std::path::Path::new(shmgate_guest_artifacts::PRODUCER).exists());
//! ```

include!(concat!(env!("OUT_DIR"), "/paths.rs"));
