//! `shmgate rm`: removal by name and by prefix and age, `--dry-run`, and
//! names that try to leave `/dev/shm`.

use std::path::Path;
use std::time::{Duration, SystemTime};

use shmgate_host::Segment;

use crate::common::{Namespace, shmgate, text};

/// Creates the object `name` in `ns`, `age` old.
fn make(ns: &Namespace, name: &str, age: Duration) {
    drop(Segment::create_new(ns.host_name(name), 64).unwrap());
    let file = std::fs::File::options()
        .write(true)
        .open(ns.path(name))
        .unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

/// The names under `ns`, as text.
fn names(ns: &Namespace) -> Vec<String> {
    ns.entries()
        .into_iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect()
}

fn exists(path: impl AsRef<Path>) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory outside `/dev/shm` with one file, removed on drop.
struct Outside(std::path::PathBuf);

impl Outside {
    fn new() -> Outside {
        let dir = std::env::temp_dir().join(format!("shmgate-rm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x"), b"keep me").unwrap();
        Outside(dir)
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Names with `..` or `/` are refused with EINVAL before anything is
/// removed: the file outside survives, and so does a valid name given in
/// the same command. A symlink planted in /dev/shm is removed itself, and
/// its target outside survives.
#[test]
fn names_cannot_leave_dev_shm() {
    let ns = Namespace::new("rmx");
    let outside = Outside::new();
    let x = outside.0.join("x");
    let dir = outside.0.to_str().unwrap().to_owned();
    make(&ns, "keep", Duration::ZERO);
    let keep = ns.host_name("keep");

    let escapes = [
        "../x".to_owned(),
        "..".to_owned(),
        ".".to_owned(),
        format!("../..{dir}/x"),
        format!("../../..{dir}/x"),
        format!("{dir}/x"),
        format!("/../..{dir}/x"),
        "a\u{1b}b".to_owned(),
    ];
    for bad in &escapes {
        for dry in [false, true] {
            let mut args = vec!["rm"];
            if dry {
                args.push("--dry-run");
            }
            args.extend([keep.as_str(), bad.as_str()]);
            let out = shmgate(&args);
            let code = out.status.code();
            assert!(code == Some(64) || code == Some(1), "{bad}: {}", text(&out));
            assert!(stderr(&out).contains("EINVAL"), "{bad}: {}", text(&out));
            assert!(stdout(&out).is_empty(), "{bad}: {}", text(&out));
            assert_eq!(std::fs::read(&x).unwrap(), b"keep me", "{bad}");
            assert!(exists(ns.path("keep")), "{bad}: the valid name was removed");
        }
    }
    // One line per refused name, each naming it.
    let out = shmgate(&["rm", "../x", "a/b"]);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 2, "{}", text(&out));
    assert!(err.contains("\"../x\"") && err.contains("\"a/b\""), "{err}");

    std::os::unix::fs::symlink(&x, ns.path("link")).unwrap();
    let out = shmgate(&["rm", &ns.host_name("link")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!exists(ns.path("link")));
    assert_eq!(std::fs::read(&x).unwrap(), b"keep me");
}

/// Named objects are removed and each is printed; a missing one is one
/// line on stderr with its name and ENOENT, and exit status 1, while the
/// others in the same command are still removed.
#[test]
fn removes_named_objects_and_reports_each_failure() {
    let ns = Namespace::new("rmn");
    make(&ns, "a", Duration::ZERO);
    make(&ns, "b", Duration::ZERO);
    // A leading slash is allowed, as shm_unlink allows it.
    let slashed = format!("/{}", ns.host_name("b"));
    let out = shmgate(&["-v", "rm", &ns.host_name("a"), &slashed]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "removed {}\nremoved {}\n",
            ns.host_name("a"),
            ns.host_name("b")
        )
    );
    assert!(stderr(&out).contains("removed"), "-v logs: {}", text(&out));
    assert!(ns.entries().is_empty(), "{:?}", ns.entries());

    make(&ns, "c", Duration::ZERO);
    let missing = ns.host_name("missing");
    let out = shmgate(&["rm", &missing, &ns.host_name("c")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&missing) && err.contains("ENOENT"), "{err}");
    assert!(!exists(ns.path("c")), "c is removed despite the failure");
}

/// `--older-than` with `--prefix` removes only the old objects under the
/// prefix: new ones under it and old ones outside it stay.
#[test]
fn older_than_with_prefix_removes_only_old_entries() {
    let ns = Namespace::new("rmo");
    let other = Namespace::new("rmo-other");
    let hour = Duration::from_secs(3600);
    make(&ns, "old", 2 * hour);
    make(&ns, "older", 50 * hour);
    make(&ns, "new", Duration::ZERO);
    make(&ns, "recent", 50 * 60 * Duration::from_secs(1));
    make(&other, "old", 2 * hour);

    let out = shmgate(&["rm", "--older-than", "1h", "--prefix", &ns.0]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "removed {}\nremoved {}\n",
            ns.host_name("old"),
            ns.host_name("older")
        )
    );
    assert_eq!(names(&ns), [ns.host_name("new"), ns.host_name("recent")]);
    assert_eq!(names(&other), [other.host_name("old")]);

    let out = shmgate(&["rm", "--older-than", "2d", "--prefix", &other.0]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(names(&other), [other.host_name("old")]);

    // --prefix alone removes everything under it.
    let out = shmgate(&["rm", "--prefix", &ns.0]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(ns.entries().is_empty());
}

/// An entry under the prefix whose name shmgate's rules refuse (a control
/// byte, which other programs can create) is one EINVAL line and exit
/// status 1, in a dry run too; the others are still removed.
#[test]
fn prefix_reports_names_it_cannot_remove() {
    let ns = Namespace::new("rmp");
    make(&ns, "ok", Duration::ZERO);
    std::fs::write(ns.path("bad\x07"), b"").unwrap();

    let out = shmgate(&["rm", "--dry-run", "--prefix", &ns.0]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        stdout(&out),
        format!("would remove {}\n", ns.host_name("ok"))
    );
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bad\\x07") && err.contains("EINVAL"), "{err}");
    assert_eq!(ns.entries().len(), 2);

    let out = shmgate(&["rm", "--prefix", &ns.0]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(stdout(&out), format!("removed {}\n", ns.host_name("ok")));
    assert!(stderr(&out).contains("EINVAL"), "{}", text(&out));
    assert_eq!(names(&ns), [ns.host_name("bad\x07")]);
}

/// `--dry-run` prints what would go and removes nothing; a missing name
/// still fails as it would.
#[test]
fn dry_run_removes_nothing() {
    let ns = Namespace::new("rmd");
    make(&ns, "old", Duration::from_secs(7200));
    make(&ns, "new", Duration::ZERO);
    let before = ns.entries();

    let out = shmgate(&["rm", "--dry-run", "--older-than", "30m", "--prefix", &ns.0]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        stdout(&out),
        format!("would remove {}\n", ns.host_name("old"))
    );
    assert_eq!(ns.entries(), before);

    let out = shmgate(&[
        "rm",
        "--dry-run",
        &ns.host_name("new"),
        &ns.host_name("old"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout(&out).lines().count(), 2, "{}", text(&out));
    assert_eq!(ns.entries(), before);

    let out = shmgate(&["rm", "--dry-run", &ns.host_name("gone")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("ENOENT"), "{}", text(&out));
    assert_eq!(ns.entries(), before);
}

/// Bad usage exits 64 and removes nothing; `--help` has an example.
#[test]
fn usage_errors() {
    let ns = Namespace::new("rmu");
    make(&ns, "x", Duration::from_secs(7200));
    let name = ns.host_name("x");
    for args in [
        vec!["rm"],
        vec!["rm", "--older-than", "1h"],
        vec!["rm", "--older-than", "1x", "--prefix", &ns.0],
        vec!["rm", "--older-than", "60", "--prefix", &ns.0],
        vec!["rm", &name, "--prefix", &ns.0],
        vec!["rm", "--no-such-flag", &name],
    ] {
        let out = shmgate(&args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", text(&out));
        assert_eq!(
            names(&ns),
            std::slice::from_ref(&name),
            "{args:?} removed something"
        );
    }
    let help = shmgate(&["rm", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("Example:"));
}
