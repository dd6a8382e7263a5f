//! `shmgate demo`: the example producer and consumer guests, each in its
//! own `shmgate run` process under a tight grant, stream data through one
//! `/dev/shm` segment; then a short report, and the segment is removed.
//!
//! The two processes are this executable re-run (`current_exe() run …`),
//! so they are real, separate OS processes that share nothing but the
//! segment. Whatever happens, every name the demo's namespace has in
//! `/dev/shm` is unlinked before the command returns, and the namespace
//! must be unused when it starts, so `/dev/shm` is left as it was found.
//! That includes Ctrl-C (`SIGINT`), `SIGTERM` and `SIGHUP`: a thread waiting
//! for them (see [`crate::signals`]) kills the guests, unlinks the
//! namespace, and lets the signal end the process.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use tracing::{info, warn};

use crate::devshm;
use crate::units::{mib, parse_size};
use crate::{Failure, exit, write_stdout};

/// The guest-side name of the segment, inside the demo's namespace.
const SEGMENT: &str = "stream";
/// The example guests' header before the payload (`examples/guests`).
const HEADER: u64 = 64;

/// Stream data between two guest processes through one segment, and report.
///
/// A producer guest and a consumer guest, each in its own process under a
/// tight grant, move the data through one /dev/shm segment; the report
/// shows bytes moved, wall time, throughput and the checksum both sides
/// computed; then the segment is removed.
///
/// The guests get the namespace shmgate-demo-PID.: the producer may create
/// one segment just big enough and hold 2 handles; the consumer is
/// read-only with 2 handles. Exit status: 0 if the consumer verified every
/// byte and both checksums agree; 1 if a guest failed or they disagree; 66
/// if a guest module is missing; 71 if a process cannot be started; 73 if
/// the namespace is already in use in /dev/shm (nothing is touched then).
///
/// The guests are carried in the executable: the demo runs from any
/// directory, with no build tree or wasm toolchain.
#[derive(Args, Debug)]
#[command(after_help = "Example: shmgate demo --size 256MiB")]
pub(crate) struct DemoArgs {
    /// How much data to stream (the payload; the segment has a 64-byte
    /// header more).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "64MiB")]
    size: u64,
    /// How long the consumer waits for the producer's data, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,
    /// The producer guest (`producer NAME SIZE`); default: the example
    /// producer carried in this executable.
    #[arg(long, value_name = "GUEST.wasm")]
    producer: Option<PathBuf>,
    /// The consumer guest (`consumer NAME TIMEOUT_SECS`); default: the
    /// example consumer carried in this executable.
    #[arg(long, value_name = "GUEST.wasm")]
    consumer: Option<PathBuf>,
    /// Also draw the zero-copy latency percentile spectrum (guest ring and
    /// the C ring ping-pong right before and after it, log scale of
    /// 1/(1-q)) into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// A native end of a baseline (the demo starts it).
    #[arg(long, value_name = "ROLE", hide = true)]
    native_end: Option<String>,
}

/// What one guest is allowed: turned into `shmgate run` options and into
/// the report's words from the same fields, so the two cannot disagree.
struct Grant {
    namespace: String,
    read_only: bool,
    /// `Some((max_created, max_size))` if the guest may create.
    create: Option<(usize, u64)>,
    max_handles: usize,
}

impl Grant {
    /// The `shmgate run` options.
    fn options(&self) -> Vec<String> {
        let mut args = vec!["--namespace".to_owned(), self.namespace.clone()];
        if self.read_only {
            args.push("--read-only".to_owned());
        }
        if let Some((created, size)) = self.create {
            args.extend([
                "--allow-create".to_owned(),
                "--max-size".to_owned(),
                size.to_string(),
                "--max-created".to_owned(),
                created.to_string(),
            ]);
        }
        args.extend(["--max-handles".to_owned(), self.max_handles.to_string()]);
        args
    }

    /// What the grant allows, in words (the namespace aside).
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.read_only {
            parts.push("read-only (no create, write, resize or unlink)".to_owned());
        }
        if let Some((created, size)) = self.create {
            let segments = if created == 1 { "segment" } else { "segments" };
            parts.push(format!(
                "create {created} {segments} of at most {size} bytes"
            ));
            parts.push("no unlink, no resize of existing segments".to_owned());
        }
        parts.push(format!("at most {} open handles", self.max_handles));
        parts.join("; ")
    }
}

/// The pids of the guests not yet reaped. A pid is removed under the lock
/// in the same step that reaps it, so the signal thread, which kills the
/// pids it finds here under the same lock, never kills a reused pid.
type Running = Arc<Mutex<Vec<u32>>>;

/// A guest process; killed and reaped if dropped before it was waited for.
struct Guest {
    role: &'static str,
    child: Option<Child>,
    running: Running,
}

/// How a guest process ended.
struct Ended {
    success: bool,
    status: String,
    stdout: String,
}

impl Guest {
    /// Starts `shmgate run GRANT GUEST -- ARGS` as a new process.
    fn spawn(
        running: &Running,
        role: &'static str,
        verbose: u8,
        grant: &Grant,
        guest: &Path,
        args: &[String],
    ) -> Result<Guest, Failure> {
        let exe = std::env::current_exe().map_err(|e| {
            Failure::new(
                exit::OSERR,
                format!("cannot find the shmgate executable: {e}"),
            )
        })?;
        let mut cmd = Command::new(&exe);
        for _ in 0..verbose {
            cmd.arg("-v");
        }
        cmd.arg("run")
            .args(grant.options())
            .arg(guest)
            .arg("--")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        info!(role, namespace = %grant.namespace, grant = %grant.describe(), guest = %guest.display(), ?args, "starting guest");
        let child = cmd.spawn().map_err(|e| {
            Failure::new(
                exit::OSERR,
                format!("cannot start the {role}: {}: {e}", exe.display()),
            )
        })?;
        info!(role, pid = child.id(), "guest started");
        lock(running).push(child.id());
        Ok(Guest {
            role,
            child: Some(child),
            running: Arc::clone(running),
        })
    }

    /// Reaps `child` if it has exited, forgetting its pid in the same
    /// locked step.
    fn try_reap(&self, child: &mut Child) -> std::io::Result<Option<ExitStatus>> {
        let mut running = lock(&self.running);
        let status = child.try_wait()?;
        if status.is_some() {
            running.retain(|&pid| pid != child.id());
        }
        Ok(status)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits for the process and collects its output.
    fn wait(&mut self) -> Result<Ended, Failure> {
        let Some(mut child) = self.child.take() else {
            return Err(Failure::new(exit::SOFTWARE, "guest waited for twice"));
        };
        let mut stdout = String::new();
        if let Some(mut pipe) = child.stdout.take() {
            let _ = pipe.read_to_string(&mut stdout);
        }
        let status = loop {
            match self.try_reap(&mut child) {
                Ok(Some(status)) => break status,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    return Err(Failure::new(
                        exit::OSERR,
                        format!("waiting for the {}: {e}", self.role),
                    ));
                }
            }
        };
        info!(role = self.role, %status, "guest exited");
        Ok(Ended {
            success: status.success(),
            status: status.to_string(),
            stdout,
        })
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            warn!(role = self.role, pid = child.id(), "stopping guest");
            // Our own child, by its handle: never a broad kill.
            let _ = child.kill();
            while let Ok(None) = self.try_reap(&mut child) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// The demo's namespace in `/dev/shm`: every name under it is unlinked
/// when [`Namespace::clean`] runs or the value drops.
struct Namespace {
    prefix: String,
    cleaned: bool,
}

impl Namespace {
    /// Claims `prefix`, which must have no names in `/dev/shm`.
    fn claim(prefix: String) -> Result<Namespace, Failure> {
        let taken = names_under(&prefix)?;
        if let Some(name) = taken.first() {
            return Err(Failure::new(
                exit::CANTCREAT,
                format!(
                    "{}/{}: already exists (EEXIST); left alone. \
                     Remove it with: shmgate rm --prefix {prefix}",
                    devshm::SHM_DIR,
                    devshm::escape(name)
                ),
            ));
        }
        info!(namespace = %prefix, "namespace is free");
        Ok(Namespace {
            prefix,
            cleaned: false,
        })
    }

    /// Unlinks every name under the namespace; returns the names removed
    /// and an error for any that could not be.
    fn clean(&mut self) -> (Vec<String>, Vec<String>) {
        self.cleaned = true;
        let (mut removed, mut errors) = (Vec::new(), Vec::new());
        let names = match names_under(&self.prefix) {
            Ok(names) => names,
            Err(f) => return (removed, vec![f.message]),
        };
        for name in names {
            let shown = format!("{}/{}", devshm::SHM_DIR, devshm::escape(&name));
            match shmgate_host::unlink(&name) {
                Ok(()) => {
                    info!(segment = %shown, "removed");
                    removed.push(shown);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        (removed, errors)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if !self.cleaned {
            for e in self.clean().1 {
                eprintln!("shmgate: demo cleanup: {e}");
            }
        }
    }
}

/// Locks `m`, also after a panic elsewhere (the data is a list of pids).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the signal thread does: kills the unreaped guests (by the pids of
/// our own children, under the lock that reaping takes), then unlinks every
/// name under `prefix`. Runs once, as ordinary code in its own thread.
#[allow(unsafe_code)]
fn terminate(running: &Running, prefix: &str) {
    let running = lock(running);
    for &pid in running.iter() {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: kill takes no pointers; `pid` is a child of ours that
            // has not been reaped (we hold the lock reaping takes), so the
            // number still names it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let mut namespace = Namespace {
        prefix: prefix.to_owned(),
        cleaned: false,
    };
    let (removed, errors) = namespace.clean();
    for name in removed {
        eprintln!("shmgate: demo interrupted: removed {name}");
    }
    for e in errors {
        eprintln!("shmgate: demo cleanup: {e}");
    }
    // Keep the lock: no guest is reaped (and its pid freed) before exit.
    std::mem::forget(running);
}

/// The names in `/dev/shm` that start with `prefix`.
fn names_under(prefix: &str) -> Result<Vec<Vec<u8>>, Failure> {
    let entries = devshm::scan().map_err(|e| {
        Failure::new(
            exit::NOINPUT,
            format!("cannot read {}: {e}", devshm::SHM_DIR),
        )
    })?;
    Ok(entries
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n.starts_with(prefix.as_bytes()))
        .collect())
}

/// What a copy-path guest said: bytes, its loop's seconds if it said, and
/// its checksum.
#[derive(Debug, PartialEq)]
struct Said {
    bytes: u64,
    secs: Option<f64>,
    sum: String,
}

/// Finds `what N bytes`, `in S s` and `fnv1a-words HEX` in a guest's line.
fn parse_line(line: &str, what: &str) -> Option<Said> {
    let bytes = line
        .split(&format!("{what} "))
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    let secs = line
        .split(" in ")
        .nth(1)
        .and_then(|t| t.split(" s").next())
        .and_then(|t| t.parse().ok());
    let sum = line.split("fnv1a-words ").nth(1)?.trim();
    let hex = !sum.is_empty() && sum.chars().all(|c| c.is_ascii_hexdigit());
    hex.then(|| Said {
        bytes,
        secs,
        sum: sum.to_owned(),
    })
}

/// The time from the creation of `segment` (its birth time: the producer
/// creates it once it has started) until now, when the consumer has
/// verified it: the streaming itself, without process start-up and wasm
/// compilation. `None` where the file system keeps no birth time.
fn streaming_time(segment: &str) -> Option<Duration> {
    let now = SystemTime::now();
    let born = std::fs::symlink_metadata(segment).ok()?.created().ok()?;
    now.duration_since(born).ok()
}

/// Runs the demo.
pub(crate) fn demo(args: &DemoArgs, verbose: u8) -> Result<u8, Failure> {
    if let Some(role) = &args.native_end {
        return crate::native::end(role);
    }
    // The guests this executable carries, as files for `shmgate run`.
    let guests = crate::guests::Guests::write()?;
    let producer_path = args
        .producer
        .clone()
        .unwrap_or_else(|| guests.path("producer"));
    let consumer_path = args
        .consumer
        .clone()
        .unwrap_or_else(|| guests.path("consumer"));
    for (role, path) in [("producer", &producer_path), ("consumer", &consumer_path)] {
        if !path.is_file() {
            return Err(Failure::new(
                exit::NOINPUT,
                format!(
                    "the {role} guest {} is missing (ENOENT); pass --{role} GUEST.wasm",
                    path.display()
                ),
            ));
        }
        info!(role, path = %path.display(), "found guest");
    }
    let segment_size = args
        .size
        .checked_add(HEADER)
        .ok_or_else(|| Failure::new(exit::USAGE, format!("--size {} is too large", args.size)))?;

    // Before any thread starts: see `crate::signals`.
    let on_signal = crate::signals::on_termination()
        .map_err(|e| Failure::new(exit::OSERR, format!("cannot start the signal thread: {e}")))?;
    let mut namespace = Namespace::claim(format!("shmgate-demo-{}.", std::process::id()))?;
    let running: Running = Arc::new(Mutex::new(Vec::new()));
    {
        let (running, prefix) = (Arc::clone(&running), namespace.prefix.clone());
        let guest_dir = guests.dir().to_owned();
        *lock(&on_signal) = Some(Box::new(move || {
            terminate(&running, &prefix);
            let _ = std::fs::remove_dir_all(&guest_dir);
        }));
    }
    // The headline first: the zero-copy path (`crate::zero_copy`).
    let headline = crate::zero_copy::measure(&namespace.prefix, &guests, args.plot.as_deref())?;
    write_stdout(headline.as_bytes())?;
    let producer_grant = Grant {
        namespace: namespace.prefix.clone(),
        read_only: false,
        create: Some((1, segment_size)),
        max_handles: 2,
    };
    let consumer_grant = Grant {
        namespace: namespace.prefix.clone(),
        read_only: true,
        create: None,
        max_handles: 2,
    };

    let start = Instant::now();
    // The consumer first: it waits for the producer's READY.
    let mut consumer = Guest::spawn(
        &running,
        "consumer",
        verbose,
        &consumer_grant,
        &consumer_path,
        &[SEGMENT.to_owned(), args.timeout.to_string()],
    )?;
    let mut producer = Guest::spawn(
        &running,
        "producer",
        verbose,
        &producer_grant,
        &producer_path,
        &[SEGMENT.to_owned(), args.size.to_string()],
    )?;
    let (producer_pid, consumer_pid) = (producer.pid(), consumer.pid());
    let produced = producer.wait()?;
    if !produced.success {
        // The consumer would wait out its timeout: dropping it stops it.
        // Dropping the namespace (on return) unlinks what the producer made.
        drop(consumer);
        return Err(Failure::new(
            exit::FAILURE,
            format!("demo failed: the producer exited with {}", produced.status),
        ));
    }
    let consumed = consumer.wait()?;
    let elapsed = start.elapsed();
    // The same copy path natively, in the same run (before the cleanup,
    // under the namespace).
    let native = crate::native::copy_path(&format!("{}native-copy", namespace.prefix), args.size)?;
    let segment = format!("{}/{}{SEGMENT}", devshm::SHM_DIR, namespace.prefix);
    let streaming = streaming_time(&segment);
    let (removed, cleanup_errors) = namespace.clean();
    // From here on a signal has nothing left to clean.
    drop(lock(&on_signal).take());
    let leftover = names_under(&namespace.prefix)?;

    let mut problems = Vec::new();
    if !consumed.success {
        problems.push(format!("the consumer exited with {}", consumed.status));
    }
    let wrote = parse_line(&produced.stdout, "wrote");
    let verified = parse_line(&consumed.stdout, "verified");
    let checksum = match (&wrote, &verified) {
        (Some(w), Some(v)) if w.bytes == args.size && v.bytes == args.size && w.sum == v.sum => {
            Some(w.sum.clone())
        }
        _ if consumed.success => {
            problems.push(format!(
                "the guests disagree: producer said {:?}, consumer said {:?}",
                produced.stdout.trim(),
                consumed.stdout.trim()
            ));
            None
        }
        _ => None,
    };
    problems.extend(cleanup_errors);
    if !leftover.is_empty() {
        problems.push(format!(
            "{} name(s) left under {}",
            leftover.len(),
            namespace.prefix
        ));
    }

    let report = report(&Report {
        args,
        segment,
        producer: (producer_pid, &producer_grant, &produced.stdout),
        consumer: (consumer_pid, &consumer_grant, &consumed.stdout),
        elapsed,
        streaming,
        checksum: checksum.as_deref(),
        loops: (
            wrote.as_ref().and_then(|w| w.secs),
            verified.as_ref().and_then(|v| v.secs),
        ),
        native: (
            native.0,
            native.1,
            checksum.as_deref() == Some(&format!("{:016x}", native.2)),
        ),
        removed: &removed,
        clean: leftover.is_empty(),
    });
    write_stdout(report.as_bytes())?;
    if let Some(last) = problems.pop() {
        for p in problems {
            eprintln!("shmgate: demo failed: {p}");
        }
        return Err(Failure::new(exit::FAILURE, format!("demo failed: {last}")));
    }
    Ok(0)
}

/// What the report shows.
struct Report<'a> {
    args: &'a DemoArgs,
    segment: String,
    producer: (u32, &'a Grant, &'a str),
    consumer: (u32, &'a Grant, &'a str),
    elapsed: Duration,
    /// From the segment's creation to now, if the file system records
    /// birth times.
    streaming: Option<Duration>,
    checksum: Option<&'a str>,
    /// The seconds of the producer's write loop and the consumer's read
    /// loop, as they said.
    loops: (Option<f64>, Option<f64>),
    /// The native copy path: write and read bytes/s, and whether its
    /// checksum is the guests'.
    native: (f64, f64, bool),
    removed: &'a [String],
    /// Whether the namespace has no names left in `/dev/shm`.
    clean: bool,
}

/// The report, a few aligned lines.
fn report(r: &Report<'_>) -> String {
    let size = r.args.size;
    let secs = r.elapsed.as_secs_f64();
    // Precision loss only past 2^53 bytes.
    #[allow(clippy::cast_precision_loss)]
    let rate = |secs: f64| size as f64 / f64::from(1u32 << 20) / secs.max(1e-9);
    let mut out = String::new();
    let mut line = |label: &str, text: &str| {
        let _ = writeln!(out, "  {label:<11} {text}");
    };
    line(
        "segment",
        &format!("{} ({HEADER}-byte header + {size}-byte payload)", r.segment),
    );
    for (role, (pid, grant, said)) in [("producer", r.producer), ("consumer", r.consumer)] {
        line(role, &format!("pid {pid}, namespace {:?}", grant.namespace));
        line("", &format!("allowed: {}", grant.describe()));
        let said = said.trim();
        line(
            "",
            &format!("said: {}", if said.is_empty() { "(nothing)" } else { said }),
        );
    }
    line("moved", &format!("{size} bytes ({})", mib(size)));
    line(
        "wall time",
        &format!("{secs:.3} s, both processes from start to exit (compiling the guests included)"),
    );
    let mut throughput = format!("{:.1} MiB/s over the wall time", rate(secs));
    if let Some(streaming) = r.streaming {
        let secs = streaming.as_secs_f64();
        let _ = write!(
            throughput,
            "; {:.1} MiB/s from segment creation to verified ({secs:.3} s)",
            rate(secs)
        );
    }
    line("throughput", &throughput);
    let gb = |bytes_s: f64| bytes_s / 1e9;
    for (what, call, secs, native) in [
        ("write", "write_all_at", r.loops.0, r.native.0),
        ("read", "read_exact_at", r.loops.1, r.native.1),
    ] {
        let Some(secs) = secs else { continue };
        let guest = size as f64 / secs.max(1e-9);
        line(
            if what == "write" { "copy path" } else { "" },
            &format!(
                "{what} loop (1 MiB blocks, fill and word-wise checksum included, no start-up \
                 or compilation): guest {:.2} GB/s; native Segment::{call}, same run: {:.2} GB/s ({:.2}x)",
                gb(guest),
                gb(native),
                guest / native
            ),
        );
    }
    match r.checksum {
        Some(sum) => line(
            "checksum",
            &format!(
                "fnv1a-words {sum}, computed by both guests independently: they agree{}",
                if r.native.2 {
                    "; so does the native copy"
                } else {
                    "; the native copy DIFFERS"
                }
            ),
        ),
        None => line("checksum", "no agreement (see below)"),
    }
    let removed = if r.removed.is_empty() {
        "nothing to remove".to_owned()
    } else {
        format!("removed {}", r.removed.join(", "))
    };
    let state = if r.clean {
        "/dev/shm is as it was"
    } else {
        "names are left (see below)"
    };
    line("cleanup", &format!("{removed}; {state}"));
    format!(
        "shmgate demo: {} from a producer guest to a consumer guest, two processes, one segment\n{out}",
        mib(size)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_guests_lines() {
        assert_eq!(
            parse_line(
                "producer: wrote 4096 bytes to \"stream\" in 0.25 s, fnv1a-words 00ff12\n",
                "wrote"
            ),
            Some(Said {
                bytes: 4096,
                secs: Some(0.25),
                sum: "00ff12".to_owned()
            })
        );
        assert_eq!(
            parse_line(
                "consumer: verified 7 bytes from \"stream\", fnv1a-words abc\n",
                "verified"
            ),
            Some(Said {
                bytes: 7,
                secs: None,
                sum: "abc".to_owned()
            })
        );
        assert_eq!(parse_line("consumer: timed out", "verified"), None);
        assert_eq!(parse_line("wrote 1 bytes, fnv1a-words zz", "wrote"), None);
    }

    #[test]
    fn grant_options_match_run() {
        let grant = Grant {
            namespace: "ns.".to_owned(),
            read_only: false,
            create: Some((1, 128)),
            max_handles: 2,
        };
        assert_eq!(
            grant.options().join(" "),
            "--namespace ns. --allow-create --max-size 128 --max-created 1 --max-handles 2"
        );
        assert_eq!(
            grant.describe(),
            "create 1 segment of at most 128 bytes; \
             no unlink, no resize of existing segments; at most 2 open handles"
        );
    }
}
