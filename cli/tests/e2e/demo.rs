//! `shmgate demo`: both guests in their own processes, a report, and
//! `/dev/shm` left exactly as it was found, on success and on failure.

use std::sync::Mutex;

use shmgate_guest_artifacts::ECHO;

use crate::common::{shmgate, text};

/// Demos run one at a time, so that one's segment never shows up in
/// another's before/after comparison.
static ONE_DEMO: Mutex<()> = Mutex::new(());

/// The names in `/dev/shm` that a demo may create.
fn demo_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")
        .expect("reading /dev/shm")
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("shmgate-demo-"))
        .collect();
    names.sort();
    names
}

/// The demo streams the data, both guests agree on the checksum, the
/// report says so, `-v` logs the grants and steps, and `/dev/shm` is as
/// before.
#[test]
fn demo_streams_reports_and_leaves_dev_shm_as_it_was() {
    let _one = ONE_DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let before = demo_names();
    let out = shmgate(&["-v", "demo", "--size", "8MiB"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(demo_names(), before, "{}", text(&out));

    let report = String::from_utf8_lossy(&out.stdout);
    for want in [
        "moved       8388608 bytes (8.0 MiB)",
        "MiB/s",
        "write loop",
        "read loop",
        "native Segment::write_all_at, same run:",
        "so does the native copy",
        "they agree",
        "read-only",
        "allowed: create 1 segment of at most 8388672 bytes",
        "at most 2 open handles",
        "/dev/shm is as it was",
    ] {
        assert!(report.contains(want), "{want:?} missing: {}", text(&out));
    }
    // Both guests printed the same checksum as the report's.
    let sum = report
        .split("fnv1a-words ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_hexdigit()).next())
        .expect("a checksum in the report");
    assert_eq!(
        report.matches(&format!("fnv1a-words {sum}")).count(),
        3,
        "{report}"
    );

    // The logs: each demo step, and the grant each `shmgate run` gave.
    let logs = String::from_utf8_lossy(&out.stderr);
    for want in [
        "found guest",
        "starting guest",
        "grant",
        "guest exited",
        "removed",
    ] {
        assert!(logs.contains(want), "{want:?} not logged: {}", text(&out));
    }
}

/// A consumer that fails (here the echo guest, which cannot open or create
/// what it wants under a read-only grant) fails the demo with a non-zero
/// exit, and the producer's segment is still removed.
#[test]
fn failed_demo_still_cleans_up() {
    let _one = ONE_DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let before = demo_names();
    let out = shmgate(&["demo", "--size", "1MiB", "--consumer", ECHO]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shmgate: demo failed: the consumer exited"),
        "{}",
        text(&out)
    );
    assert_eq!(demo_names(), before, "{}", text(&out));
}

/// A missing guest is EX_NOINPUT, with the path; nothing is created.
#[test]
fn missing_guest_is_noinput() {
    let out = shmgate(&["demo", "--producer", "/nonexistent/producer.wasm"]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/producer.wasm") && err.contains("ENOENT"),
        "{err}"
    );
    let help = shmgate(&["demo", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("Example:"));
}

/// The demo's headline is the zero-copy path, each number next to its
/// same-run baseline; `--plot` draws the latency distributions as SVG.
#[test]
fn demo_leads_with_zero_copy_and_plots() {
    let _one = ONE_DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let before = demo_names();
    let svg = std::env::temp_dir().join(format!("shmgate-e2e-plot-{}.svg", std::process::id()));
    let out = shmgate(&["demo", "--size", "1MiB", "--plot", svg.to_str().unwrap()]);
    let drawn = std::fs::read_to_string(&svg);
    let _ = std::fs::remove_file(&svg);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(demo_names(), before, "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.starts_with("shmgate demo: zero-copy"), "{report}");
    for want in [
        "GB/s; native ring ends, same transfer, right before and after:",
        "memcpy into a mapping (the ceiling)",
        "M msg/s; C ring right before and after:",
        "C ring ping-pong, 64 bytes, right before:",
        "mean",
        "guests over the C pair: one-way p50",
        "computed by both ends of each stream (guests and native): they agree",
        "latency percentile spectrum written to",
    ] {
        assert!(report.contains(want), "{want:?} missing: {report}");
    }
    let drawn = drawn.expect("the plot was written");
    assert!(drawn.starts_with("<svg"), "{drawn:.300}");
    for want in [
        "guest &lt;-&gt; guest, shmgate ring",
        "C ring ping-pong, right before and after",
    ] {
        assert!(drawn.contains(want), "{want:?} missing: {drawn:.300}");
    }
    // The percentile axis, log scale of 1/(1-q): its labels, each a text
    // of its own.
    for want in ["50%", "90%", "99%", "99.9%", "99.99%"] {
        assert!(
            drawn.lines().any(|l| l.trim() == want),
            "{want:?} missing: {drawn:.300}"
        );
    }
}

/// An installed `shmgate` runs the demo from another directory: a copy of
/// the binary alone, in a fresh directory that is also its working
/// directory, with an environment that has no cargo or rustup on the
/// `PATH`. The binary carries its guests: it names no file of the build
/// tree's guests (the old demo's defaults did, and failed with 66 once
/// those were gone). `.ci/run` also runs `cargo install --path cli` and
/// the installed demo with the build tree hidden.
#[test]
fn demo_runs_from_a_copy_of_the_binary_elsewhere() {
    let _one = ONE_DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("shmgate-e2e-installed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _gone = Gone(dir.clone());
    let bin = dir.join("shmgate");
    std::fs::copy(crate::common::SHMGATE, &bin).unwrap();
    let exe = std::fs::read(&bin).unwrap();
    let built = std::path::Path::new(shmgate_guest_artifacts::PRODUCER)
        .parent()
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        !exe.windows(built.len()).any(|w| w == built.as_bytes()),
        "the binary names the build tree's guests ({built})"
    );
    let before = demo_names();
    let out = std::process::Command::new(&bin)
        .args(["demo", "--size", "1MiB"])
        .current_dir(&dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("they agree"),
        "{}",
        text(&out)
    );
    assert_eq!(demo_names(), before, "{}", text(&out));
}

/// Ctrl-C (`SIGINT`) in the middle of the stream: the demo kills its
/// guests, removes its segments, and dies of the signal, as a shell expects;
/// nothing of its namespace is left in `/dev/shm`.
#[test]
fn interrupted_demo_removes_its_segment() {
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};

    let _one = ONE_DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = std::process::Command::new(crate::common::SHMGATE)
        .args(["demo", "--size", "2GiB"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting the demo");
    let child_id = child.id();
    let segment = format!("/dev/shm/shmgate-demo-{child_id}.stream");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::symlink_metadata(&segment).is_err() {
        assert!(
            Instant::now() < deadline,
            "the demo never created {segment}"
        );
        assert!(child.try_wait().unwrap().is_none(), "the demo ended early");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The producer guest created it through shmgate: it holds the creator
    // lock (taken right after its exclusive create).
    let name = segment.trim_start_matches("/dev/shm/");
    let alive = (0..200).any(|_| {
        let alive = shmgate_host::lifecycle::creator_alive(name).unwrap_or(false);
        if !alive {
            std::thread::sleep(Duration::from_millis(1));
        }
        alive
    });
    assert!(alive, "the guest's segment has no creator lock");
    // Our own child, by its pid.
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(kill.success());
    let out = child.wait_with_output().expect("waiting for the demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(2), "{:?}: {stderr}", out.status);
    assert!(stderr.contains("demo interrupted: removed"), "{stderr}");
    assert!(
        std::fs::symlink_metadata(&segment).is_err(),
        "{segment} left behind"
    );
    // Only this demo's namespace: another demo (a bench, a second test
    // run) may come and go beside this one.
    let ours = format!("shmgate-demo-{child_id}.");
    assert_eq!(
        demo_names()
            .into_iter()
            .filter(|n| n.starts_with(&ours))
            .collect::<Vec<_>>(),
        Vec::<String>::new()
    );
}
