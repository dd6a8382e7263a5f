//! Paths of the example guests (`examples/guests`), compiled to
//! `wasm32-wasip1` (core modules) and `wasm32-wasip2` (components,
//! `COMPONENT_*`) by this crate's build script whenever they, the guest
//! SDK or the core change.
//!
//! ```
//! assert!(std::path::Path::new(shmgate_guest_artifacts::PRODUCER).exists());
//! assert!(std::path::Path::new(shmgate_guest_artifacts::COMPONENT_DRIVER).exists());
//! ```

include!(concat!(env!("OUT_DIR"), "/paths.rs"));
