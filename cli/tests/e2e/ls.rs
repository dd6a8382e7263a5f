//! `shmgate ls`: the JSON schema and the table, on entries this test
//! creates in `/dev/shm` — objects held open and mapped by this process, a
//! planted symlink, FIFO and directory (described, never followed or
//! opened), and a name that is not UTF-8.

use std::ffi::OsStr;
use std::fs::Permissions;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use serde_json::Value;
use shmgate_host::Segment;

use crate::common::{Namespace, shmgate, text};

/// The entries of `ls --json` under `ns`, by name.
fn listed(ns: &Namespace) -> Vec<Value> {
    let out = shmgate(&["ls", "--json"]);
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

fn pids(o: &Value, field: &str) -> Vec<u64> {
    o[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} is not an array in {o}"))
        .iter()
        .map(|p| p.as_u64().expect("pids are integers"))
        .collect()
}

/// Every field of the documented schema, with its JSON type, on every
/// entry; sizes, modes, times, owners and holders as this test made them.
#[test]
fn json_schema_on_objects_this_test_made() {
    let ns = Namespace::new("ls");
    let me = u64::from(std::process::id());

    // Held open by this process for the whole test.
    let open = Segment::create_new(ns.host_name("open"), 4096).unwrap();
    std::fs::set_permissions(ns.path("open"), Permissions::from_mode(0o640)).unwrap();
    // Mapped by this process, its descriptor closed.
    let seg = Segment::create_new(ns.host_name("mapped"), 8192).unwrap();
    let mapping = seg.map().unwrap();
    drop(seg);
    // Held by nobody.
    drop(Segment::create_new(ns.host_name("idle"), 100).unwrap());
    // Planted entries that must be described, not followed or opened.
    std::os::unix::fs::symlink("/etc/passwd", ns.path("link")).unwrap();
    std::fs::create_dir(ns.path("dir")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(ns.path("fifo"))
        .status()
        .unwrap();
    assert!(fifo.success());
    // A name that is not UTF-8.
    let mut odd = ns.host_name("odd").into_bytes();
    odd.push(0xff);
    let odd_path = std::path::Path::new("/dev/shm").join(OsStr::from_bytes(&odd));
    std::fs::write(&odd_path, b"abc").unwrap();

    let objects = listed(&ns);
    let names: Vec<&str> = objects
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "sorted by name");
    assert_eq!(objects.len(), 7, "{objects:#?}");

    for o in &objects {
        assert!(o["type"].is_string(), "{o}");
        assert!(o["size"].is_u64(), "{o}");
        assert!(o["uid"].is_u64(), "{o}");
        assert!(o["user"].is_string() || o["user"].is_null(), "{o}");
        let mode = o["mode"].as_str().unwrap();
        assert!(
            mode.len() == 4 && mode.chars().all(|c| ('0'..='7').contains(&c)),
            "{o}"
        );
        let mtime = o["mtime"].as_str().unwrap();
        assert_eq!(mtime.len(), 20, "{o}");
        assert!(mtime.ends_with('Z') && mtime.as_bytes()[10] == b'T', "{o}");
        assert!(o["mtime_unix"].is_i64(), "{o}");
        pids(o, "open_by");
        pids(o, "mapped_by");
        assert!(
            o["creator_alive"].is_boolean() || o["creator_alive"].is_null(),
            "{o}"
        );
        assert!(o["orphaned"].is_boolean(), "{o}");
    }

    let o = find(&objects, &ns.host_name("open"));
    let meta = std::fs::metadata(ns.path("open")).unwrap();
    assert_eq!(o["type"], "file");
    assert_eq!(o["size"], 4096);
    assert_eq!(o["mode"], "0640");
    assert_eq!(o["uid"], meta.uid());
    if meta.uid() == 0 {
        assert_eq!(o["user"], "root");
    }
    assert_eq!(o["mtime_unix"], meta.mtime());
    assert!(o.get("name_bytes").is_none(), "only for names not UTF-8");
    assert!(pids(o, "open_by").contains(&me), "{o}");
    assert!(!pids(o, "mapped_by").contains(&me), "{o}");
    assert_eq!(o["creator_alive"], true, "{o}");
    assert_eq!(o["orphaned"], false, "{o}");

    let o = find(&objects, &ns.host_name("mapped"));
    // The mapping made through the creator's descriptor keeps its lock.
    assert_eq!(o["creator_alive"], true, "{o}");
    assert_eq!(o["size"], 8192);
    assert_eq!(o["mode"], "0600");
    assert!(pids(o, "mapped_by").contains(&me), "{o}");
    assert!(!pids(o, "open_by").contains(&me), "{o}");

    let o = find(&objects, &ns.host_name("idle"));
    assert_eq!(o["size"], 100);
    assert_eq!(o["open_by"], Value::Array(vec![]));
    assert_eq!(o["mapped_by"], Value::Array(vec![]));
    assert_eq!(o["creator_alive"], false, "{o}");
    assert_eq!(o["orphaned"], true, "{o}");

    // The symlink itself: its size is its target's length, not passwd's.
    let o = find(&objects, &ns.host_name("link"));
    assert_eq!(o["type"], "symlink");
    assert_eq!(o["size"], "/etc/passwd".len());
    assert_eq!(o["creator_alive"], Value::Null, "never opened: {o}");
    assert_eq!(o["orphaned"], false, "{o}");
    assert_eq!(find(&objects, &ns.host_name("dir"))["type"], "dir");
    assert_eq!(find(&objects, &ns.host_name("fifo"))["type"], "fifo");
    assert_eq!(
        find(&objects, &ns.host_name("fifo"))["creator_alive"],
        Value::Null
    );

    let lossy = String::from_utf8_lossy(&odd).into_owned();
    let o = find(&objects, &lossy);
    assert_eq!(o["size"], 3);
    let hex: String = odd.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(o["name_bytes"], hex);
    // Made without shmgate, held by nobody: an orphan too.
    assert_eq!(o["creator_alive"], false, "{o}");
    assert_eq!(o["orphaned"], true, "{o}");

    drop(open);
    drop(mapping);
}

/// The table has a header and a row per entry with the (escaped) name;
/// this process shows up as the holder of the segment it keeps open.
#[test]
fn table_lists_names_and_holders() {
    let ns = Namespace::new("lst");
    let held = Segment::create_new(ns.host_name("held"), 65536).unwrap();
    let mut odd = ns.host_name("esc\x1b[31m").into_bytes();
    odd.push(0xfe);
    std::fs::write(
        std::path::Path::new("/dev/shm").join(OsStr::from_bytes(&odd)),
        b"",
    )
    .unwrap();

    let out = shmgate(&["ls"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let table = String::from_utf8(out.stdout.clone()).expect("the table is UTF-8");
    let header = table.lines().next().unwrap();
    for column in [
        "TYPE",
        "MODE",
        "SIZE",
        "OWNER",
        "OPEN BY",
        "MAPPED BY",
        "NAME",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = table
        .lines()
        .find(|l| l.ends_with(&ns.host_name("held")))
        .unwrap_or_else(|| panic!("no row for held in\n{table}"));
    assert!(row.starts_with("file"), "{row}");
    assert!(row.contains(" 65536 "), "{row}");
    let me = std::process::id().to_string();
    assert!(
        row.split_whitespace()
            .any(|f| f.split(',').any(|p| p == me)),
        "{row}"
    );
    // Control bytes and bytes that are not UTF-8 are escaped, so a name
    // cannot send escape sequences to the terminal.
    let escaped = format!("{}esc\\x1b[31m\\xfe", ns.0);
    assert!(table.lines().any(|l| l.ends_with(&escaped)), "{table}");
    assert!(!table.contains('\x1b'), "{}", text(&out));
    drop(held);
}

/// `ls --help` documents the schema and has an example.
#[test]
fn help_documents_the_schema() {
    let out = shmgate(&["ls", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for field in [
        "name",
        "name_bytes",
        "type",
        "size",
        "uid",
        "user",
        "mode",
        "mtime",
        "mtime_unix",
        "open_by",
        "mapped_by",
        "Example:",
    ] {
        assert!(help.contains(field), "{field} missing from\n{help}");
    }
}

/// Every command's help, short and long, ends with an example.
#[test]
fn every_command_has_an_example() {
    for command in [&[][..], &["run"], &["ls"], &["rm"], &["demo"]] {
        for flag in ["-h", "--help"] {
            let mut args = command.to_vec();
            args.push(flag);
            let out = shmgate(&args);
            assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
            let help = String::from_utf8_lossy(&out.stdout);
            assert!(help.contains("Example: shmgate"), "{args:?}: {help}");
        }
    }
}
