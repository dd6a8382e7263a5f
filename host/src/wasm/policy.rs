//! What a guest may do: the capability policy of one store.

use std::sync::Arc;

use shmgate_core::{Errno, Mode, NAME_MAX, ShmName};

/// The capabilities granted to the guests of one store. Built with
/// [`ShmPolicy::builder`]; the default grants nothing.
///
/// | right | guest call it allows | refused with |
/// |---|---|---|
/// | [`namespace`](ShmPolicyBuilder::namespace) | any call naming a segment: guest name `foo` opens `<prefix>foo` | `EACCES` without a namespace |
/// | writes (unless [`read_only`](ShmPolicyBuilder::read_only)) | `open` with `RDWR`, `write` | `EACCES` |
/// | [`allow_create`](ShmPolicyBuilder::allow_create) | `open` with `CREATE` | `EACCES` |
/// | [`allow_resize`](ShmPolicyBuilder::allow_resize) | `open` with `TRUNC`, `set_size` on any segment (a guest may always size a segment it created) | `EACCES` |
/// | [`allow_unlink`](ShmPolicyBuilder::allow_unlink) (unless read-only) | `unlink` | `EACCES` |
///
/// Quotas: [`max_handles`](ShmPolicyBuilder::max_handles) (`EMFILE`),
/// [`max_segment_size`](ShmPolicyBuilder::max_segment_size) (`EFBIG`),
/// [`max_created`](ShmPolicyBuilder::max_created) (`EDQUOT`),
/// [`max_mapped`](ShmPolicyBuilder::max_mapped) (`ENOMEM`). Windows
/// (`map`) are read-only under a read-only grant or handle.
#[derive(Clone, Debug)]
pub struct ShmPolicy {
    pub(crate) namespace: Option<Vec<u8>>,
    pub(crate) read_only: bool,
    pub(crate) allow_create: bool,
    pub(crate) allow_unlink: bool,
    pub(crate) allow_resize: bool,
    pub(crate) create_mode: Mode,
    pub(crate) max_handles: usize,
    pub(crate) max_segment_size: u64,
    pub(crate) max_created: usize,
    pub(crate) max_mapped: u64,
    pub(crate) max_windows: usize,
    pub(crate) max_wait: std::time::Duration,
    pub(crate) auto_unlink: bool,
}

/// How many windows a store may have mapped at once unless its policy
/// says otherwise ([`ShmPolicyBuilder::max_windows`]).
pub const DEFAULT_MAX_WINDOWS: usize = 64;

/// The most handles one store can hold: handles carry a 16-bit slot index.
pub const HANDLES_LIMIT: usize = 1 << 16;

impl ShmPolicy {
    /// A builder that starts from "deny everything".
    pub fn builder() -> ShmPolicyBuilder {
        ShmPolicyBuilder {
            policy: ShmPolicy::deny_all(),
        }
    }

    /// The policy that grants nothing: every call that names a segment
    /// fails with `EACCES`.
    pub fn deny_all() -> ShmPolicy {
        ShmPolicy {
            namespace: None,
            read_only: false,
            allow_create: false,
            allow_unlink: false,
            allow_resize: false,
            create_mode: Mode::OWNER_RW,
            max_handles: 64,
            max_segment_size: 64 << 20,
            max_created: 16,
            max_mapped: 0,
            max_windows: DEFAULT_MAX_WINDOWS,
            max_wait: std::time::Duration::from_secs(30),
            auto_unlink: false,
        }
    }

    /// The namespace prefix, if any.
    pub fn namespace(&self) -> Option<&[u8]> {
        self.namespace.as_deref()
    }

    /// Maps a guest's name into the namespace: `foo` becomes `<prefix>foo`.
    ///
    /// The guest's part must itself be a valid relative name (no leading
    /// `/`, no `/`, `.`, `..`, NUL or control bytes), so nothing it writes
    /// can leave the prefix.
    ///
    /// # Errors
    ///
    /// `EACCES` without a namespace, `EINVAL` for a bad name,
    /// `ENAMETOOLONG` if prefix and name exceed [`NAME_MAX`].
    pub fn resolve(&self, guest_name: &[u8]) -> Result<Arc<[u8]>, Errno> {
        let prefix = self.namespace.as_deref().ok_or(Errno::ACCES)?;
        if guest_name.first() == Some(&b'/') {
            return Err(Errno::INVAL); // absolute names are not the guest's to use
        }
        ShmName::new(guest_name)?;
        if prefix.len() + guest_name.len() > NAME_MAX {
            return Err(Errno::NAMETOOLONG);
        }
        // Joined on the stack: one allocation, the `Arc` the segment keeps.
        let mut buf = [0u8; NAME_MAX];
        let full = &mut buf[..prefix.len() + guest_name.len()];
        full[..prefix.len()].copy_from_slice(prefix);
        full[prefix.len()..].copy_from_slice(guest_name);
        // Prefix and name are each valid, so this holds; checked anyway
        // because it is what the kernel will see.
        ShmName::new(full)?;
        Ok(Arc::from(&*full))
    }
}

/// Builds a [`ShmPolicy`]; see there for what each right allows.
///
/// ```
/// use shmgate_host::wasm::ShmPolicy;
/// let policy = ShmPolicy::builder()
///     .namespace("tenant-a.")
///     .allow_create(true)
///     .max_segment_size(1 << 20)
///     .auto_unlink(true)
///     .build()?;
/// assert_eq!(&*policy.resolve(b"jobs")?, b"tenant-a.jobs");
/// # Ok::<(), shmgate_host::Errno>(())
/// ```
#[derive(Clone, Debug)]
pub struct ShmPolicyBuilder {
    policy: ShmPolicy,
}

impl ShmPolicyBuilder {
    /// Grants the segments whose names start with `prefix`; the guest names
    /// only the rest. The prefix must be a valid name start: no `/`, NUL or
    /// control bytes. An empty prefix grants all of `/dev/shm`.
    ///
    /// Prefixes nest: `"t-a"` also grants `"t-a-b.x"`, which a tenant with
    /// prefix `"t-a-b."` uses. End every prefix with a separator no tenant
    /// name contains (`"tenant-a."`), so no prefix is a prefix of another.
    pub fn namespace(mut self, prefix: impl AsRef<[u8]>) -> Self {
        self.policy.namespace = Some(prefix.as_ref().to_vec());
        self
    }

    /// Read-only: `RDWR`, `CREATE` and `TRUNC` are refused with `EACCES`,
    /// and so is `unlink` even with [`allow_unlink`](Self::allow_unlink).
    pub fn read_only(mut self, on: bool) -> Self {
        self.policy.read_only = on;
        self
    }

    /// Allows `open` with `CREATE`.
    pub fn allow_create(mut self, on: bool) -> Self {
        self.policy.allow_create = on;
        self
    }

    /// Allows `unlink`.
    pub fn allow_unlink(mut self, on: bool) -> Self {
        self.policy.allow_unlink = on;
        self
    }

    /// Allows `set_size` on any segment and `open` with `TRUNC`.
    pub fn allow_resize(mut self, on: bool) -> Self {
        self.policy.allow_resize = on;
        self
    }

    /// The most permissive mode a guest's create gets (default `0o600`):
    /// the guest's requested mode is masked by it. Special bits are refused.
    pub fn create_mode(mut self, mode: Mode) -> Self {
        self.policy.create_mode = mode;
        self
    }

    /// The most handles open at once (default 64, at most 65536).
    pub fn max_handles(mut self, n: usize) -> Self {
        self.policy.max_handles = n;
        self
    }

    /// The largest size `set_size` may set (default 64 MiB).
    pub fn max_segment_size(mut self, bytes: u64) -> Self {
        self.policy.max_segment_size = bytes;
        self
    }

    /// The most segments this store may create (default 16).
    pub fn max_created(mut self, n: usize) -> Self {
        self.policy.max_created = n;
        self
    }

    /// The most bytes of windows mapped into this store's memories at once
    /// (default 0: no windows). `map` beyond it is `ENOMEM`.
    pub fn max_mapped(mut self, bytes: u64) -> Self {
        self.policy.max_mapped = bytes;
        self
    }

    /// The most windows mapped into this store's memories at once
    /// (default [`DEFAULT_MAX_WINDOWS`]). `map` beyond it is `ENOMEM`.
    /// Windows of one store never use up another store's: the
    /// process-wide registry holds 4 Mi registrations, enough for 50,000
    /// stores at the default limits (64 windows and 16 futex pages each).
    pub fn max_windows(mut self, n: usize) -> Self {
        self.policy.max_windows = n;
        self
    }

    /// The longest one `wait32` may block (default 30 s), whatever timeout
    /// the guest asks for; it then returns `ETIMEDOUT`. Host calls are not
    /// reached by wasmtime's epoch interruption, so this (and
    /// [`ShmCtx::interrupt_handle`](super::ShmCtx::interrupt_handle)) is what
    /// keeps a waiting guest from holding its thread forever. Any value
    /// works: one too far to express as a deadline means no limit.
    pub fn max_wait(mut self, limit: std::time::Duration) -> Self {
        self.policy.max_wait = limit;
        self
    }

    /// Unlink the segments this store created when the store is dropped.
    pub fn auto_unlink(mut self, on: bool) -> Self {
        self.policy.auto_unlink = on;
        self
    }

    /// Checks and returns the policy.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a namespace prefix that starts with `/` or holds a `/`,
    /// NUL or control byte, a create mode with special bits, or more than
    /// [`HANDLES_LIMIT`] handles; `ENAMETOOLONG` for a prefix that leaves no
    /// room for a name.
    pub fn build(self) -> Result<ShmPolicy, Errno> {
        let p = self.policy;
        if let Some(prefix) = &p.namespace {
            if prefix.len() >= NAME_MAX {
                return Err(Errno::NAMETOOLONG);
            }
            // A prefix is valid if it starts a valid name: check it with a
            // stand-in final byte (also makes the empty prefix valid).
            let probe = [prefix.as_slice(), b"x"].concat();
            if prefix.first() == Some(&b'/') || ShmName::new(&probe)?.len() != probe.len() {
                return Err(Errno::INVAL);
            }
        }
        if p.create_mode.is_special() || p.max_handles > HANDLES_LIMIT {
            return Err(Errno::INVAL);
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(prefix: &str) -> ShmPolicy {
        ShmPolicy::builder().namespace(prefix).build().unwrap()
    }

    #[test]
    fn resolve_stays_inside_the_prefix() {
        let p = ns("app.");
        assert_eq!(&*p.resolve(b"x").unwrap(), b"app.x");
        for bad in [
            &b"/x"[..],
            b"//x",
            b"..",
            b".",
            b"../x",
            b"a/b",
            b"",
            b"x\0",
            b"\x1b",
        ] {
            assert_eq!(p.resolve(bad), Err(Errno::INVAL), "{bad:?}");
        }
        assert!(p.resolve(&[b'n'; 251]).is_ok());
        assert_eq!(p.resolve(&[b'n'; 252]), Err(Errno::NAMETOOLONG));
        assert_eq!(p.resolve(&[b'n'; 300]), Err(Errno::NAMETOOLONG));
    }

    #[test]
    fn deny_all_grants_nothing() {
        let p = ShmPolicy::builder().build().unwrap();
        assert_eq!(p.resolve(b"x"), Err(Errno::ACCES));
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in ["/abs", "a/b", "x\0", "\x07", "/"] {
            let r = ShmPolicy::builder().namespace(bad).build();
            assert_eq!(r.map(|_| ()), Err(Errno::INVAL), "{bad:?}");
        }
        let long = "p".repeat(255);
        assert_eq!(
            ShmPolicy::builder().namespace(long).build().map(|_| ()),
            Err(Errno::NAMETOOLONG)
        );
        // "." and ".." as prefixes are fine: "..x" is an ordinary name.
        assert_eq!(&*ns("..").resolve(b"x").unwrap(), b"..x");
        assert_eq!(&*ns("").resolve(b"x").unwrap(), b"x");
    }

    #[test]
    fn special_create_mode_refused() {
        let r = ShmPolicy::builder()
            .create_mode(Mode::SUID | Mode::OWNER_RW)
            .build();
        assert_eq!(r.map(|_| ()), Err(Errno::INVAL));
    }
}
