//! `shmgate ls` and `shmgate rm --orphaned` against creators that live or
//! were killed with `SIGKILL`, and a name re-created between the listing
//! and the removal.
//!
//! A creator is this test binary re-run as a helper process (the ignored
//! test [`hold_helper`]): it creates a segment through shmgate (which takes
//! the creator lock) and holds it until killed or until its stdin closes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use shmgate_host::{OpenOptions, Segment, lifecycle};

use crate::common::{Namespace, shmgate, text};

/// The environment variable that turns [`hold_helper`] into a holder.
const HOLD: &str = "SHMGATE_E2E_HOLD";

/// Not a test: the creator process of the tests below. It does nothing
/// unless `SHMGATE_E2E_HOLD` names the segment to create.
#[test]
#[ignore = "a helper process, run by the tests of this module"]
fn hold_helper() {
    let Some(name) = std::env::var_os(HOLD) else {
        return;
    };
    let seg = OpenOptions::new()
        .create_new(true)
        .size(4096)
        .open(name.as_encoded_bytes())
        .expect("the helper creates its segment");
    println!("ready");
    let _ = std::io::stdin().lock().read_line(&mut String::new());
    drop(seg);
}

/// A helper process holding `name`; killed and reaped on drop.
struct Creator(Child);

impl Creator {
    fn start(name: &str) -> Creator {
        let exe = std::env::current_exe().expect("the test binary");
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "orphans::hold_helper",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOLD, name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the helper");
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let creator = Creator(child);
        let mut line = String::new();
        while out.read_line(&mut line).expect("reading the helper") > 0 {
            if line.contains("ready") {
                return creator;
            }
            line.clear();
        }
        panic!("the helper never created {name}");
    }

    /// `SIGKILL`, then reap.
    fn kill(mut self) {
        self.0.kill().expect("kill");
        self.0.wait().expect("wait");
    }
}

impl Drop for Creator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ls --json`'s entry for `name`.
fn entry(name: &str) -> Value {
    let out = shmgate(&["ls", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    all.into_iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed"))
}

/// A live creator: `ls` says alive and shows it holding the object; `rm
/// --orphaned` leaves it. Killed with `SIGKILL`: `ls` says orphaned, and
/// `rm --orphaned --dry-run` names it without removing, `rm --orphaned`
/// removes it.
#[test]
fn killed_creator_is_orphaned_and_removed() {
    let ns = Namespace::new("orphans");
    let name = ns.host_name("seg");
    let creator = Creator::start(&name);
    let pid = u64::from(creator.0.id());

    let live = entry(&name);
    assert_eq!(live["creator_alive"], true, "{live}");
    assert_eq!(live["orphaned"], false, "{live}");
    assert!(
        live["open_by"].as_array().unwrap().contains(&pid.into()),
        "{live}"
    );
    let table = shmgate(&["ls"]);
    let row = String::from_utf8_lossy(&table.stdout)
        .lines()
        .find(|l| l.ends_with(&name))
        .map(str::to_owned)
        .expect("a table row");
    assert!(row.contains("alive"), "{row}");

    let out = shmgate(&["rm", "--orphaned", "--prefix", &ns.0]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert!(std::fs::symlink_metadata(ns.path("seg")).is_ok());

    creator.kill();
    let dead = entry(&name);
    assert_eq!(dead["creator_alive"], false, "{dead}");
    assert_eq!(dead["orphaned"], true, "{dead}");
    assert_eq!(dead["open_by"], serde_json::json!([]), "{dead}");

    let dry = shmgate(&["rm", "--orphaned", "--prefix", &ns.0, "--dry-run"]);
    assert_eq!(
        String::from_utf8_lossy(&dry.stdout),
        format!("would remove {name}\n"),
        "{}",
        text(&dry)
    );
    assert!(std::fs::symlink_metadata(ns.path("seg")).is_ok());
    let out = shmgate(&["rm", "--orphaned", "--prefix", &ns.0]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("removed {name}\n")
    );
    assert!(std::fs::symlink_metadata(ns.path("seg")).is_err());
}

/// Held by a process that did not create it (open or mapped), an object
/// whose creator is gone is not an orphan; nor is one made without
/// shmgate while someone holds it.
#[test]
fn held_objects_are_not_orphans() {
    let ns = Namespace::new("held");
    drop(Segment::create_new(ns.host_name("opened"), 4096).unwrap());
    let opened = Segment::open_read_only(ns.host_name("opened")).unwrap();
    drop(Segment::create_new(ns.host_name("mapped"), 4096).unwrap());
    let mapping = Segment::open_read_only(ns.host_name("mapped"))
        .unwrap()
        .map()
        .unwrap();
    drop(Segment::create_new(ns.host_name("idle"), 4096).unwrap());

    let out = shmgate(&["rm", "--orphaned", "--prefix", &ns.0]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("removed {}\n", ns.host_name("idle")),
        "{}",
        text(&out)
    );
    assert!(std::fs::symlink_metadata(ns.path("opened")).is_ok());
    assert!(std::fs::symlink_metadata(ns.path("mapped")).is_ok());
    drop((opened, mapping));
}

/// The re-check `rm --orphaned` does right before each unlink
/// (`lifecycle::unlink_if_orphaned` with the listed identity): a name
/// re-created after the listing is left alone, even if the newcomer is an
/// orphan too; `ls` then describes the newcomer.
#[test]
fn name_recreated_after_listing_is_left_alone() {
    let ns = Namespace::new("recreated");
    let name = ns.host_name("seg");
    let creator = Creator::start(&name);
    creator.kill();
    let listed = entry(&name);
    assert_eq!(listed["orphaned"], true, "{listed}");
    let meta = std::fs::symlink_metadata(ns.path("seg")).unwrap();
    let listed_id = shmgate_host::Identity::new(
        std::os::unix::fs::MetadataExt::dev(&meta),
        std::os::unix::fs::MetadataExt::ino(&meta),
    );
    // Between the listing and the removal: removed and created again.
    shmgate_host::unlink(&name).unwrap();
    let newcomer = Creator::start(&name);
    assert_eq!(
        lifecycle::unlink_if_orphaned(&name, listed_id).unwrap(),
        lifecycle::Removal::Changed
    );
    newcomer.kill();
    assert_eq!(
        lifecycle::unlink_if_orphaned(&name, listed_id).unwrap(),
        lifecycle::Removal::Changed
    );
    assert!(std::fs::symlink_metadata(ns.path("seg")).is_ok());
    assert_eq!(entry(&name)["orphaned"], true);
}
