//! `shmgate ls` and `rm --orphaned` never call live data orphaned: holders
//! seen by identity behind a bind mount, holders `/proc` cannot show
//! (non-dumpable, another PID namespace), a name re-created between the
//! listing and the unlink, and entries that are no shared memory objects.
//! Also what `shmgate run` says of files that are no guests.
//!
//! The tests that need root (mount namespaces, `setpriv`, PID namespaces)
//! print why and return when not run as root; CI runs them as root.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;
use shmgate_host::{Mode, OFlags, Segment};

use crate::common::{Namespace, SHMGATE, shmgate, text};

/// The user the unprivileged halves of these tests run as.
const NOBODY: &str = "65534";

/// The environment variable that turns [`helper`] into a holder.
const HELPER: &str = "SHMGATE_E2E_LIVENESS_HELPER";

/// Whether this process runs as root; if not, says which test it skips.
fn root_or_skip(test: &str) -> bool {
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        eprintln!(
            "skipping {test}: it needs root (namespaces, mounts, setpriv); CI runs it as root"
        );
    }
    root
}

/// An object made as glibc's `shm_open` makes it: no creator lock, no
/// holder lock; `size` bytes. The descriptor is returned (drop it to leave
/// nobody holding the object).
fn plain_object(name: &str, size: u64) -> Segment {
    let seg = shmgate_host::open(
        name,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
        Mode::OWNER_RW,
    )
    .expect("creating the object");
    seg.set_len(size).expect("sizing it");
    seg
}

/// The device and inode `/dev/shm/<name>` refers to.
fn identity(path: &str) -> (u64, u64) {
    let meta = std::fs::symlink_metadata(path).expect("the entry exists");
    (meta.dev(), meta.ino())
}

/// `ls --json`'s entries under `ns` (run with `wrap` in front, e.g. in
/// another PID namespace).
fn listed(ns: &Namespace, wrap: &[&str]) -> Vec<Value> {
    let out = run_wrapped(wrap, &["ls", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).expect("ls --json is JSON");
    all.into_iter()
        .filter(|o| o["name"].as_str().is_some_and(|n| n.starts_with(&ns.0)))
        .collect()
}

fn find<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed in {objects:#?}"))
}

/// `shmgate ARGS` with `wrap` (a command and its arguments) in front.
fn run_wrapped(wrap: &[&str], args: &[&str]) -> std::process::Output {
    if wrap.is_empty() {
        return shmgate(args);
    }
    Command::new(wrap[0])
        .args(&wrap[1..])
        .arg(SHMGATE)
        .args(args)
        .output()
        .expect("running shmgate wrapped")
}

/// A process that holds an object until dropped (stdin closed, then
/// killed and reaped), ready once it printed `ready`.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Holder {
    fn start(mut cmd: Command) -> Holder {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the holder");
        let stdin = child.stdin.take();
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        while out.read_line(&mut line).expect("reading the holder") > 0 {
            if line.contains("ready") {
                return Holder { child, stdin };
            }
            line.clear();
        }
        let _ = child.kill();
        let status = child.wait();
        panic!("the holder never got ready: {status:?}");
    }

    fn pid(&self) -> u64 {
        u64::from(self.child.id())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory under the temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("shmgate-e2e-{}-{n}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Not a test: the holder processes of the tests below, run as another
/// user. It does nothing unless `SHMGATE_E2E_LIVENESS_HELPER` says what to
/// hold: `nondumpable:NAME` creates NAME as glibc would (no locks), maps
/// it, keeps its descriptor, makes itself non-dumpable
/// (`PR_SET_DUMPABLE` 0), prints `ready` and waits for stdin to close.
#[test]
#[ignore = "a helper process, run by the tests of this module"]
fn helper() {
    let Some(what) = std::env::var_os(HELPER) else {
        return;
    };
    let what = what.into_string().expect("UTF-8");
    let name = what.strip_prefix("nondumpable:").expect("a known helper");
    let seg = plain_object(name, 4096);
    let map = seg.map().expect("mapping it");
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) changes only this process's
    // dumpable flag; it takes no pointers.
    #[allow(unsafe_code)]
    let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    assert_eq!(r, 0, "prctl: {}", std::io::Error::last_os_error());
    println!("ready");
    let _ = std::io::stdin().lock().read_line(&mut String::new());
    drop((map, seg));
}

/// A process in its own mount namespace bind-mounts `/dev/shm` elsewhere
/// and keeps an object open through that path (its `/proc/PID/fd` link
/// does not start with `/dev/shm/`), as a container sharing the host's
/// `/dev/shm` does. `ls` shows it as the holder, `rm --orphaned` leaves the
/// object and removes the true orphan beside it.
#[test]
fn holder_behind_a_bind_mount_is_seen() {
    if !root_or_skip("holder_behind_a_bind_mount_is_seen") {
        return;
    }
    let ns = Namespace::new("bind");
    let mnt = TempDir::new("bind");
    drop(plain_object(&ns.host_name("held"), 4096));
    drop(plain_object(&ns.host_name("orphan"), 4096));
    let script = format!(
        "mount --bind /dev/shm {mnt} && exec 3<{mnt}/{name} && echo ready && read x",
        mnt = mnt.0.display(),
        name = ns.host_name("held"),
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    let holder = Holder::start(cmd);
    // The case at hand: the descriptor's path is not under /dev/shm.
    let link = std::fs::read_link(format!("/proc/{}/fd/3", holder.pid())).unwrap();
    assert!(
        link.starts_with(&mnt.0),
        "the holder's descriptor shows {}",
        link.display()
    );

    let objects = listed(&ns, &[]);
    let held = find(&objects, &ns.host_name("held"));
    assert_eq!(held["status"], "in-use", "{held}");
    assert_eq!(held["orphaned"], false, "{held}");
    assert!(
        held["open_by"]
            .as_array()
            .unwrap()
            .contains(&holder.pid().into()),
        "{held}"
    );
    assert_eq!(
        find(&objects, &ns.host_name("orphan"))["status"],
        "orphaned"
    );

    let out = shmgate(&["rm", "--orphaned", "--prefix", &ns.0]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("removed {}\n", ns.host_name("orphan")),
        "{}",
        text(&out)
    );
    assert!(std::fs::symlink_metadata(ns.path("held")).is_ok());
    drop(holder);
}

/// A user's own non-dumpable process holds (open and mapped) an object
/// made without locks. `rm --orphaned` run as the same unprivileged user
/// cannot read that process's `/proc` entries; the object stays (the
/// kernel refuses a write lease on it: someone has it open). Beside it,
/// root's object that nobody holds is "not proven orphaned" for that user
/// (no lease on another user's object, and other users' processes cannot
/// be read): reported, with root named as what would decide. As root, the
/// holder is seen, the object stays, and root's orphan goes.
#[test]
fn non_dumpable_holder_is_not_an_orphan() {
    if !root_or_skip("non_dumpable_holder_is_not_an_orphan") {
        return;
    }
    let ns = Namespace::new("dump");
    let theirs = plain_object(&ns.host_name("theirs"), 4096);
    std::fs::set_permissions(
        ns.path("theirs"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    drop(theirs);
    let exe = std::env::current_exe().expect("the test binary");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"])
        .arg(&exe)
        .args([
            "--exact",
            "liveness::helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER, format!("nondumpable:{}", ns.host_name("held")));
    let holder = Holder::start(cmd);
    let status = std::fs::read_to_string(format!("/proc/{}/status", holder.pid())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l == format!("Uid:\t{NOBODY}\t{NOBODY}\t{NOBODY}\t{NOBODY}")),
        "{status}"
    );

    let as_nobody = [
        "setpriv",
        "--reuid",
        NOBODY,
        "--regid",
        NOBODY,
        "--clear-groups",
        "--",
    ];
    let out = run_wrapped(&as_nobody, &["rm", "--orphaned", "--prefix", &ns.0]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert!(
        std::fs::symlink_metadata(ns.path("held")).is_ok(),
        "removed under its holder: {}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "rm \"{}\": skipped: not proven orphaned",
            ns.host_name("theirs")
        )),
        "{}",
        text(&out)
    );
    assert!(
        err.contains("skipped 1 object(s) not proven orphaned") && err.contains("root"),
        "{}",
        text(&out)
    );
    let objects = listed(&ns, &as_nobody);
    let held = find(&objects, &ns.host_name("held"));
    assert_eq!(held["status"], "in-use", "{held}");
    assert_eq!(held["open_elsewhere"], true, "{held}");
    assert_eq!(find(&objects, &ns.host_name("theirs"))["status"], "unknown");

    // As root the non-dumpable process is read: held; the orphan goes.
    let out = shmgate(&["rm", "--orphaned", "--prefix", &ns.0]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("removed {}\n", ns.host_name("theirs")),
        "{}",
        text(&out)
    );
    assert!(std::fs::symlink_metadata(ns.path("held")).is_ok());
    let objects = listed(&ns, &[]);
    let held = find(&objects, &ns.host_name("held"));
    assert_eq!(held["status"], "in-use", "{held}");
    assert!(
        held["mapped_by"]
            .as_array()
            .unwrap()
            .contains(&holder.pid().into()),
        "{held}"
    );
    drop(holder);
}

/// A process holds an object (made without locks) through a managed open
/// (`Segment::open_read_only`, which takes the holder lock); `ls` and
/// `rm --orphaned` run in a new PID namespace, whose `/proc` does not show
/// the holder, and without `CAP_LEASE` on objects they do not own, so the
/// kernel's lease cannot tell either. The holder lock in the inode does:
/// the object stays, the orphan beside it goes.
#[test]
fn holder_in_another_pid_namespace_is_seen_through_its_lock() {
    if !root_or_skip("holder_in_another_pid_namespace_is_seen_through_its_lock") {
        return;
    }
    let ns = Namespace::new("pidns");
    for name in ["held", "orphan"] {
        drop(plain_object(&ns.host_name(name), 4096));
        std::os::unix::fs::chown(ns.path(name), Some(65534), Some(65534)).unwrap();
    }
    let held = Segment::open_read_only(ns.host_name("held")).unwrap();
    let me = u64::from(std::process::id());
    let unshared = [
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "setpriv",
        "--bounding-set",
        "-lease",
        "--",
    ];

    let objects = listed(&ns, &unshared);
    let o = find(&objects, &ns.host_name("held"));
    assert_eq!(o["open_by"], serde_json::json!([]), "/proc shows us: {o}");
    assert_eq!(o["holder_alive"], true, "{o}");
    assert_eq!(o["status"], "in-use", "{o}");
    // No lease can be taken there (the orphan shows it); the lock decides.
    let orphan = find(&objects, &ns.host_name("orphan"));
    assert_eq!(
        orphan["open_elsewhere"],
        Value::Null,
        "a lease was taken: {orphan}"
    );
    assert_eq!(orphan["status"], "orphaned", "{orphan}");
    // Outside, /proc shows us too.
    let o = find(&listed(&ns, &[]), &ns.host_name("held")).clone();
    assert!(o["open_by"].as_array().unwrap().contains(&me.into()), "{o}");

    let out = run_wrapped(&unshared, &["rm", "--orphaned", "--prefix", &ns.0]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("removed {}\n", ns.host_name("orphan")),
        "{}",
        text(&out)
    );
    assert!(
        std::fs::symlink_metadata(ns.path("held")).is_ok(),
        "removed under its holder"
    );
    drop(held);
}

/// `shmgate rm --orphaned` (the binary) lists two orphans, then, paused
/// by its test-only seam, sees both names removed and re-created as new
/// objects (made without locks): one that this process holds open, one
/// that nobody holds. The unlink's re-check with the listed identity
/// leaves both newcomers alone. Were the listed identity not passed down
/// (re-read at unlink time, say), the idle newcomer would go: no lock, no
/// holder and no `/proc` entry protects it.
#[test]
fn names_recreated_between_listing_and_unlink_stay() {
    let ns = Namespace::new("recheck");
    let names = [ns.host_name("held"), ns.host_name("idle")];
    for name in &names {
        drop(plain_object(name, 4096));
    }
    let mut child = Command::new(SHMGATE)
        .args(["rm", "--orphaned", "--prefix", &ns.0])
        .env("SHMGATE_TEST_PAUSE_BEFORE_UNLINK", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting shmgate rm");
    let mut stdin = child.stdin.take().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut paused = false;
    while err.read_line(&mut line).unwrap() > 0 {
        if line.contains("shmgate: test pause") {
            paused = true;
            break;
        }
        line.clear();
    }
    if !paused {
        let _ = child.kill();
        let _ = child.wait();
        panic!("shmgate rm never paused after its listing: {line}");
    }
    // Between the listing and the unlink: new objects under the names.
    for name in &names {
        shmgate_host::unlink(name).unwrap();
    }
    let newcomer = plain_object(&names[0], 8192);
    drop(plain_object(&names[1], 8192));
    let new_ids = [identity(&ns.path("held")), identity(&ns.path("idle"))];
    stdin.write_all(b"\n").unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{rest}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        rest.matches("re-created since the listing").count(),
        2,
        "{rest}"
    );
    for (name, id) in ["held", "idle"].iter().zip(new_ids) {
        let path = ns.path(name);
        assert!(
            std::fs::symlink_metadata(&path).is_ok(),
            "the newcomer {name} was removed"
        );
        assert_eq!(identity(&path), id);
    }
    drop(newcomer);
}

/// Entries that are no shared memory objects (a directory, a FIFO, a
/// symlink, a name shm_open's rules refuse) are listed and skipped, never
/// followed or removed, by `ls`, `rm --orphaned` and its dry run, which
/// print the same verdicts; only the true orphan goes.
#[test]
fn bad_entries_are_listed_and_skipped_alike_in_dry_and_real_runs() {
    let ns = Namespace::new("bad");
    let outside = TempDir::new("target");
    let target = outside.0.join("x");
    std::fs::write(&target, b"keep me").unwrap();
    std::fs::create_dir(ns.path("dir")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(ns.path("fifo"))
        .status()
        .unwrap();
    assert!(fifo.success());
    std::os::unix::fs::symlink(&target, ns.path("link")).unwrap();
    std::fs::write(ns.path("ctl\x07"), b"x").unwrap();
    drop(plain_object(&ns.host_name("orphan"), 4096));

    let objects = listed(&ns, &[]);
    for bad in ["dir", "fifo", "link", "ctl\x07"] {
        let o = find(&objects, &ns.host_name(bad));
        assert_eq!(o["status"], "skipped", "{o}");
        assert_eq!(o["orphaned"], false, "{o}");
        assert!(!o["reason"].as_str().unwrap().is_empty(), "{o}");
    }

    let dry = shmgate(&["rm", "--orphaned", "--prefix", &ns.0, "--dry-run"]);
    let real = shmgate(&["rm", "--orphaned", "--prefix", &ns.0]);
    for out in [&dry, &real] {
        assert_eq!(out.status.code(), Some(0), "{}", text(out));
    }
    assert_eq!(
        dry.stderr,
        real.stderr,
        "dry: {}\nreal: {}",
        text(&dry),
        text(&real)
    );
    let err = String::from_utf8_lossy(&real.stderr);
    for (bad, why) in [
        ("dir", "a directory"),
        ("fifo", "a FIFO"),
        ("link", "a symlink (never followed)"),
        ("ctl\\x07", "not a valid shared memory name"),
    ] {
        let line = format!("rm \"{}\": skipped: {why}", ns.host_name(bad));
        assert!(err.contains(&line), "no {line:?} in {}", text(&real));
    }
    assert_eq!(
        String::from_utf8_lossy(&dry.stdout),
        format!("would remove {}\n", ns.host_name("orphan"))
    );
    assert_eq!(
        String::from_utf8_lossy(&real.stdout),
        format!("removed {}\n", ns.host_name("orphan"))
    );
    for bad in ["dir", "fifo", "link", "ctl\x07"] {
        assert!(
            std::fs::symlink_metadata(ns.path(bad)).is_ok(),
            "{bad} removed"
        );
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
}

/// `shmgate run` on a file that is neither a module nor a component gets
/// one line saying exactly that, and exit status 65 (EX_DATAERR).
#[test]
fn run_refuses_files_that_are_no_guests_in_one_line() {
    let dir = TempDir::new("notwasm");
    let script = dir.0.join("script.sh");
    std::fs::write(&script, b"#!/bin/sh\necho hi\n").unwrap();
    let empty = dir.0.join("empty.wasm");
    std::fs::write(&empty, b"").unwrap();
    let binary = dir.0.join("binary.wasm");
    std::fs::write(&binary, b"\x01\x02\xff\xfe not wasm").unwrap();
    for (file, what) in [
        (std::path::PathBuf::from(SHMGATE), "an ELF executable"),
        (script, "a script (#!)"),
        (empty, "an empty file"),
        (binary, "no \\0asm header"),
    ] {
        let out = shmgate(&["run", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(65), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{}", text(&out));
        assert!(
            err.contains(&format!(
                "{}: neither a WebAssembly module nor a component: {what}",
                file.display()
            )),
            "{}",
            text(&out)
        );
    }
}
