//! Paths of the example guests (`examples/guests`), compiled to
//! `wasm32-wasip1` (core modules) and `wasm32-wasip2` (components,
//! `COMPONENT_*`) by this crate's build script whenever they, the guest
//! SDK or the core change; and the core modules' bytes (`*_WASM`,
//! `include_bytes!`), so that a program can carry them wherever it is
//! installed (`shmgate demo` does).
//!
//! ```
//! assert!(std::path::Path::new(shmgate_guest_artifacts::PRODUCER).exists());
//! assert!(std::path::Path::new(shmgate_guest_artifacts::COMPONENT_DRIVER).exists());
//! assert_eq!(
//!     shmgate_guest_artifacts::PRODUCER_WASM,
//!     std::fs::read(shmgate_guest_artifacts::PRODUCER).unwrap()
//! );
//! assert_eq!(&shmgate_guest_artifacts::RING_PING_WASM[..4], b"\0asm");
//! ```

include!(concat!(env!("OUT_DIR"), "/paths.rs"));
