//! The hostile cases as one table of (grant, operation, errno), for both
//! ABIs ([`crate::abi`]): `shmgate_v1` from a core module and
//! `shmgate:shm` from a component (run by `cases`, and by the `wasm_fds`
//! binary, which counts descriptors around them). One policy engine answers both, so every
//! case must give the same errno through either; a case one ABI cannot
//! express (see [`crate::abi`]) is skipped there, and counted.
//!
//! Each case runs in a fresh store with a fresh [`Scope`]: an existing
//! segment `seg` (holding `keep`) in the namespace and a sentinel outside
//! it. After the refused operation nothing in `/dev/shm` changed, the store
//! holds no handle and created nothing, and it still opens and reads
//! `seg`: the host is unharmed.

use shmgate_core::{Errno, NAME_MAX};
use shmgate_host::wasm::ShmPolicy;

use crate::abi::Abi;
use crate::common::*;

/// Names with a `/` anywhere, absolute paths and traversals.
const SLASHED: &[&[u8]] = &[
    b"/",
    b"//",
    b"/x",
    b"//x",
    b"a/b",
    b"x/",
    b"../x",
    b"./x",
    b"/dev/shm/x",
    b"../../etc/passwd",
    b"a/../b",
];

/// `.`, `..` and names with NUL or control bytes, and the empty name.
const INVALID: &[&[u8]] = &[
    b"",
    b".",
    b"..",
    b"\0",
    b"x\0",
    b"\0x",
    b"a\0b",
    b"..\0",
    b"\n",
    b"a\tb",
    b"x\x1b[31m",
    b"\x7f",
    b"x\x01",
    b"\xff/x",
];

/// Flags that ask for some write access.
const WRITE_FLAGS: [i32; 8] = [
    RDWR,
    CREATE,
    CREATE | EXCL,
    RDWR | CREATE,
    RDWR | CREATE | EXCL,
    RDWR | TRUNC,
    RDWR | CREATE | TRUNC,
    RDWR | CREATE | EXCL | TRUNC,
];

/// What the host grants in a case; everything is in namespace `a`.
#[derive(Clone, Copy, Debug)]
enum Grant {
    /// Create, unlink and resize.
    Full,
    /// [`Grant::Full`], read-only.
    ReadOnly,
    /// Every right, but no namespace.
    NoNamespace,
    /// [`Grant::Full`] without one right.
    Without(Right),
    /// [`Grant::Full`] with `max_handles`.
    MaxHandles(usize),
    /// [`Grant::Full`] with `max_created`.
    MaxCreated(usize),
    /// [`Grant::Full`] with `max_segment_size`.
    MaxSize(u64),
}

#[derive(Clone, Copy, Debug)]
enum Right {
    Create,
    Resize,
    Unlink,
}

impl Grant {
    fn policy(self, scope: &Scope) -> ShmPolicy {
        let full = scope.full("a");
        let b = match self {
            Grant::Full => full,
            Grant::ReadOnly => full.read_only(true),
            Grant::NoNamespace => ShmPolicy::builder()
                .allow_create(true)
                .allow_unlink(true)
                .allow_resize(true),
            Grant::Without(Right::Create) => full.allow_create(false),
            Grant::Without(Right::Resize) => full.allow_resize(false),
            Grant::Without(Right::Unlink) => full.allow_unlink(false),
            Grant::MaxHandles(n) => full.max_handles(n),
            Grant::MaxCreated(n) => full.max_created(n),
            Grant::MaxSize(n) => full.max_segment_size(n),
        };
        b.build().expect("a valid policy")
    }
}

/// A name a case passes.
#[derive(Clone, Debug)]
enum Name {
    /// These bytes.
    Lit(&'static [u8]),
    /// `n` bytes of `n`.
    Len(usize),
    /// As many bytes of `n` as fit with the namespace, plus this many.
    Over(usize),
    /// This prefix and the sentinel's host name (`../<sentinel>`, ...).
    Aimed(&'static str),
}

impl Name {
    fn bytes(&self, scope: &Scope, sentinel: &Sentinel) -> Vec<u8> {
        match self {
            Name::Lit(b) => b.to_vec(),
            Name::Len(n) => vec![b'n'; *n],
            Name::Over(extra) => vec![b'n'; NAME_MAX - scope.ns("a").len() + extra],
            Name::Aimed(prefix) => format!("{prefix}{}", sentinel.name()).into_bytes(),
        }
    }
}

/// The operation of a case.
#[derive(Clone, Debug)]
enum Op {
    /// `open(name, flags, mode)`.
    Open(Name, i32, i32),
    /// `unlink(name)`.
    Unlink(Name),
    /// `set_size` on `seg` opened with these flags.
    SetSize(i32, i64),
    /// `write` of `len` bytes at `offset` on `seg` opened with these flags.
    Write(i32, i64, usize),
    /// `read` of `len` bytes at `offset` on `seg` opened with these flags.
    Read(i32, i64, usize),
    /// `wait32(offset, expected, timeout_ns)` on `seg` opened with these
    /// flags.
    Wait32(i32, i64, u32, i64),
    /// `notify(offset, count)` on `seg` opened with these flags.
    Notify(i32, i64, u32),
    /// `atomic32(offset, op, operand, expected)` on `seg` opened with these
    /// flags.
    Atomic32(i32, i64, i32, u32, u32),
}

/// The word `seg` holds: `keep`, little-endian.
const KEEP: u32 = u32::from_le_bytes(*b"keep");

/// One row of the table.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    grant: Grant,
    op: Op,
    expect: Errno,
}

fn case(grant: Grant, op: Op, expect: Errno) -> Case {
    Case { grant, op, expect }
}

fn open(name: &'static [u8], flags: i32) -> Op {
    Op::Open(Name::Lit(name), flags, 0o600)
}

/// The table.
pub(crate) fn table() -> Vec<Case> {
    use Errno as E;
    use Grant::*;
    let mut t = Vec::new();

    // Names: slashes, dots, NUL, control bytes, traversals aimed at the
    // sentinel, and the empty name are EINVAL for every flag and unlink.
    let names = SLASHED.iter().chain(INVALID).map(|&n| Name::Lit(n));
    let aimed = ["../", "/", "/dev/shm/"].map(Name::Aimed);
    for name in names.chain(aimed) {
        for flags in [
            RDONLY,
            RDWR,
            RDWR | CREATE,
            RDWR | CREATE | EXCL,
            RDWR | TRUNC,
        ] {
            t.push(case(Full, Op::Open(name.clone(), flags, 0o600), E::INVAL));
        }
        t.push(case(Full, Op::Unlink(name), E::INVAL));
    }
    // Too long with the prefix: ENAMETOOLONG, also far beyond what the
    // host copies (4096).
    for name in [
        Name::Over(1),
        Name::Len(NAME_MAX),
        Name::Len(NAME_MAX + 1),
        Name::Len(300),
        Name::Len(4096),
        Name::Len(5000),
    ] {
        for flags in [RDONLY, RDWR | CREATE] {
            t.push(case(
                Full,
                Op::Open(name.clone(), flags, 0o600),
                E::NAMETOOLONG,
            ));
        }
        t.push(case(Full, Op::Unlink(name), E::NAMETOOLONG));
    }
    // No namespace: nothing at all.
    for flags in [
        RDONLY,
        RDWR,
        RDWR | CREATE,
        RDWR | CREATE | EXCL,
        RDWR | TRUNC,
    ] {
        t.push(case(NoNamespace, open(b"seg", flags), E::ACCES));
        t.push(case(NoNamespace, open(b"fresh", flags), E::ACCES));
    }
    t.push(case(NoNamespace, Op::Unlink(Name::Lit(b"seg")), E::ACCES));
    // Missing segments.
    t.push(case(Full, open(b"missing", RDONLY), E::NOENT));
    t.push(case(Full, open(b"missing", RDWR), E::NOENT));
    t.push(case(Full, Op::Unlink(Name::Lit(b"missing")), E::NOENT));

    // Flags: unknown bits, EXCL without CREATE, TRUNC without RDWR.
    let bad_flags = [
        16,
        0x10 | RDWR,
        0x100,
        0x40,  // Linux O_CREAT: not a wire bit
        0x200, // Linux O_TRUNC
        -1,
        i32::MIN,
        i32::MAX,
        EXCL,
        EXCL | RDWR,
        TRUNC,
        TRUNC | CREATE,
        TRUNC | CREATE | EXCL,
    ];
    for flags in bad_flags {
        t.push(case(Full, open(b"seg", flags), E::INVAL));
        t.push(case(Full, open(b"fresh", flags), E::INVAL));
    }
    // Modes: more than 0o7777 is EINVAL, special bits EPERM.
    for mode in [0o10000, 0o100600, 0o170000, -1, i32::MIN, i32::MAX] {
        for flags in [RDONLY, RDWR | CREATE] {
            t.push(case(
                Full,
                Op::Open(Name::Lit(b"fresh"), flags, mode),
                E::INVAL,
            ));
        }
    }
    for mode in [0o4600, 0o2600, 0o1600, 0o7777, 0o4000] {
        for flags in [RDONLY, RDWR | CREATE] {
            t.push(case(
                Full,
                Op::Open(Name::Lit(b"fresh"), flags, mode),
                E::PERM,
            ));
        }
    }

    // A read-only grant: every flag that needs write access, unlink, and
    // writes and resizes through a read-only handle.
    for flags in WRITE_FLAGS {
        t.push(case(ReadOnly, open(b"seg", flags), E::ACCES));
        t.push(case(ReadOnly, open(b"fresh", flags), E::ACCES));
    }
    t.push(case(ReadOnly, open(b"seg", TRUNC), E::INVAL));
    t.push(case(ReadOnly, Op::Unlink(Name::Lit(b"seg")), E::ACCES));
    t.push(case(ReadOnly, Op::Write(RDONLY, 0, 4), E::BADF));
    t.push(case(ReadOnly, Op::Write(RDONLY, 0, 0), E::BADF));
    t.push(case(ReadOnly, Op::Write(RDONLY, 1 << 20, 1), E::BADF));
    t.push(case(ReadOnly, Op::SetSize(RDONLY, 0), E::BADF));
    t.push(case(ReadOnly, Op::SetSize(RDONLY, 1 << 20), E::BADF));
    // A read-only handle under a full grant cannot write or resize either.
    t.push(case(Full, Op::Write(RDONLY, 0, 4), E::BADF));
    t.push(case(Full, Op::SetSize(RDONLY, 8), E::BADF));

    // Rights: create, truncate, resize, unlink.
    for flags in [CREATE, CREATE | EXCL, RDWR | CREATE, RDWR | CREATE | TRUNC] {
        t.push(case(Without(Right::Create), open(b"seg", flags), E::ACCES));
        t.push(case(
            Without(Right::Create),
            open(b"fresh", flags),
            E::ACCES,
        ));
    }
    for flags in [
        RDWR | CREATE | EXCL,
        CREATE | EXCL,
        RDWR | CREATE | EXCL | TRUNC,
    ] {
        t.push(case(Full, open(b"seg", flags), E::EXIST));
    }
    for flags in [RDWR | TRUNC, RDWR | CREATE | TRUNC] {
        t.push(case(Without(Right::Resize), open(b"seg", flags), E::ACCES));
    }
    t.push(case(Without(Right::Resize), Op::SetSize(RDWR, 8), E::ACCES));
    t.push(case(
        Without(Right::Unlink),
        Op::Unlink(Name::Lit(b"seg")),
        E::ACCES,
    ));

    // Quotas.
    t.push(case(MaxHandles(0), open(b"seg", RDONLY), E::MFILE));
    t.push(case(MaxHandles(0), open(b"fresh", RDWR | CREATE), E::MFILE));
    t.push(case(MaxCreated(0), open(b"fresh", RDWR | CREATE), E::DQUOT));
    t.push(case(
        MaxCreated(0),
        open(b"fresh", RDWR | CREATE | EXCL),
        E::DQUOT,
    ));
    t.push(case(MaxSize(4), Op::SetSize(RDWR, 5), E::FBIG));
    t.push(case(MaxSize(4), Op::SetSize(RDWR, i64::MAX), E::FBIG));
    t.push(case(Full, Op::SetSize(RDWR, -1), E::INVAL));
    t.push(case(Full, Op::SetSize(RDWR, i64::MIN), E::INVAL));

    // Offsets: negative is EINVAL, offset + len past i64::MAX EOVERFLOW.
    for offset in [-1, -4096, i64::MIN] {
        for len in [4, 0] {
            t.push(case(Full, Op::Read(RDWR, offset, len), E::INVAL));
            t.push(case(Full, Op::Write(RDWR, offset, len), E::INVAL));
        }
    }
    for (offset, len) in [(i64::MAX, 1), (i64::MAX - 3, 4), (i64::MAX - 100, 4096)] {
        t.push(case(Full, Op::Read(RDWR, offset, len), E::OVERFLOW));
        t.push(case(Full, Op::Write(RDWR, offset, len), E::OVERFLOW));
    }

    // wait32, notify, atomic32: the word must be 4-byte aligned (EINVAL)
    // and inside the segment (ENXIO: `seg` is 4 bytes); a wait on a value
    // that differs is EAGAIN, one that is not woken ETIMEDOUT; every atomic
    // but load needs a RDWR handle; op numbers beyond 4 are EINVAL.
    for offset in [1, 2, 3, -4, i64::MIN] {
        t.push(case(Full, Op::Wait32(RDONLY, offset, KEEP, 0), E::INVAL));
        t.push(case(Full, Op::Notify(RDONLY, offset, 1), E::INVAL));
        t.push(case(Full, Op::Atomic32(RDWR, offset, 0, 0, 0), E::INVAL));
    }
    for offset in [4, 8, 1 << 20, i64::MAX - 3] {
        t.push(case(Full, Op::Wait32(RDONLY, offset, KEEP, 0), E::NXIO));
        t.push(case(Full, Op::Notify(RDONLY, offset, u32::MAX), E::NXIO));
        t.push(case(Full, Op::Atomic32(RDWR, offset, 0, 0, 0), E::NXIO));
    }
    t.push(case(Full, Op::Wait32(RDONLY, 0, !KEEP, -1), E::AGAIN));
    t.push(case(Full, Op::Wait32(RDONLY, 0, KEEP, 0), E::TIMEDOUT));
    t.push(case(
        Full,
        Op::Wait32(RDONLY, 0, KEEP, 1_000_000),
        E::TIMEDOUT,
    ));
    for op in 1..=4 {
        t.push(case(Full, Op::Atomic32(RDONLY, 0, op, 0, KEEP), E::BADF));
        t.push(case(
            ReadOnly,
            Op::Atomic32(RDONLY, 0, op, 0, KEEP),
            E::BADF,
        ));
    }
    for op in [5, 6, -1, i32::MIN, i32::MAX] {
        t.push(case(Full, Op::Atomic32(RDWR, 0, op, 0, 0), E::INVAL));
    }
    t
}

/// Runs `op`; `None` if the ABI cannot express it.
fn exec(
    abi: &mut dyn Abi,
    op: &Op,
    scope: &Scope,
    sentinel: &Sentinel,
) -> Option<Result<(), Errno>> {
    let on_seg = |abi: &mut dyn Abi, flags: i32| -> Option<u32> {
        let r = abi.open(b"seg", flags, 0o600)?;
        Some(r.unwrap_or_else(|e| panic!("{}: opening seg with {flags:#x}: {e}", abi.name())))
    };
    Some(match op {
        Op::Open(name, flags, mode) => {
            let h = abi.open(&name.bytes(scope, sentinel), *flags, *mode)?;
            // A success is a table error: close it so the checks below
            // report the case, not a leak.
            h.map(|h| abi.close(h))
        }
        Op::Unlink(name) => abi.unlink(&name.bytes(scope, sentinel))?,
        Op::SetSize(flags, size) => {
            let h = on_seg(abi, *flags)?;
            let r = abi.set_size(h, *size);
            abi.close(h);
            r
        }
        Op::Write(flags, offset, len) => {
            let h = on_seg(abi, *flags)?;
            let r = abi.write(h, *offset, &vec![b'W'; *len]).map(|_| ());
            abi.close(h);
            r
        }
        Op::Read(flags, offset, len) => {
            let h = on_seg(abi, *flags)?;
            let r = abi.read(h, *offset, *len).map(|_| ());
            abi.close(h);
            r
        }
        Op::Wait32(flags, offset, expected, timeout) => {
            let h = on_seg(abi, *flags)?;
            let r = abi.wait32(h, *offset, *expected, *timeout);
            abi.close(h);
            r
        }
        Op::Notify(flags, offset, count) => {
            let h = on_seg(abi, *flags)?;
            let r = abi.notify(h, *offset, *count).map(|_| ());
            abi.close(h);
            r
        }
        Op::Atomic32(flags, offset, op, operand, expected) => {
            let h = on_seg(abi, *flags)?;
            let r = abi.atomic32(h, *offset, *op, *operand, *expected);
            abi.close(h);
            r?.map(|_| ())
        }
    })
}

/// Runs every case through the ABI `make` builds; returns how many ran
/// and how many the ABI could not express.
pub(crate) fn run_table(make: impl Fn(ShmPolicy) -> Box<dyn Abi>) -> (usize, usize) {
    let (mut ran, mut skipped) = (0, 0);
    for case in table() {
        let scope = Scope::new();
        let sentinel = Sentinel::new(&scope, "x");
        let seg = format!("{}seg", scope.ns("a"));
        host_create(&seg, b"keep");
        let before = scope.entries();
        let mut abi = make(case.grant.policy(&scope));
        let Some(got) = exec(&mut *abi, &case.op, &scope, &sentinel) else {
            skipped += 1;
            continue;
        };
        ran += 1;
        let what = format!("{}: {case:?}", abi.name());
        assert_eq!(got, Err(case.expect), "{what}");
        assert_eq!(abi.ctx().open_handles(), 0, "{what}: handles left");
        assert_eq!(abi.ctx().created().count(), 0, "{what}: created");
        assert_eq!(scope.entries(), before, "{what}: /dev/shm changed");
        sentinel.assert_intact();
        assert_eq!(contents(&seg), b"keep", "{what}: seg changed");
        // The same store still works (unless the grant forbids reading).
        if !matches!(case.grant, Grant::NoNamespace | Grant::MaxHandles(0)) {
            let h = abi
                .open(b"seg", RDONLY, 0o600)
                .expect("expressible")
                .unwrap_or_else(|e| panic!("{what}: probe open: {e}"));
            assert_eq!(abi.size(h), Ok(4), "{what}: probe size");
            assert_eq!(
                abi.read(h, 0, 64).as_deref(),
                Ok(&b"keep"[..]),
                "{what}: probe"
            );
            abi.close(h);
            assert_eq!(abi.ctx().open_handles(), 0, "{what}: probe handle");
        }
    }
    (ran, skipped)
}
