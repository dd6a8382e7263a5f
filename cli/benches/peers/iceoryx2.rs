//! The ring bench's peer: iceoryx2 (crate `iceoryx2`, the best-known Rust
//! zero-copy IPC) publish-subscribe between two processes, with the same
//! payload as the ring and busy-waiting subscribers, as iceoryx2's own
//! `benchmark-publish-subscribe` does (there its two ends are threads of
//! one process; here they are two processes, as shmgate's ends are).
//!
//! - Throughput: one publisher, one subscriber with a 4096-sample buffer
//!   (the C ring's slot count), no overflow: the publisher retries until
//!   the subscriber has room, so no message is lost.
//! - Ping-pong: services `a2b` and `b2a`, history 0, buffer 1 (iceoryx2's
//!   benchmark settings); each message carries its number and send time
//!   (`CLOCK_MONOTONIC`, the clock the other ends read); the pong end
//!   records the one-way trip before it answers, the ping end the round
//!   trip / 2.
//!
//! Every function returns the error in words instead of panicking, so the
//! bench can say why iceoryx2 did not run here.

use std::process::Child;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use iceoryx2::prelude::*;
use shmgate_host::ring::monotonic_ns;

use crate::latency;

/// A process-unique service name under `shmgate-bench/`.
pub(crate) fn service(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("shmgate-bench/{}-{n}/{tag}", std::process::id())
}

fn err(what: &str) -> impl Fn(&dyn std::fmt::Debug) -> String + '_ {
    move |e| format!("iceoryx2 {what}: {e:?}")
}

fn node() -> Result<Node<ipc::Service>, String> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new()
        .create::<ipc::Service>()
        .map_err(|e| err("node")(&e))
}

fn name(s: &str) -> Result<ServiceName, String> {
    ServiceName::new(s).map_err(|e| err("service name")(&e))
}

/// Waits (at most 60 s) until `n` subscribers are connected to `svc`.
fn wait_for_subscribers<P: std::fmt::Debug + ZeroCopySend>(
    svc: &iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, P, ()>,
    child: &mut Child,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while svc.dynamic_config().number_of_subscribers() < 1 {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("iceoryx2 peer process exited early: {status}"));
        }
        if Instant::now() > deadline {
            return Err("iceoryx2: no subscriber connected within 60 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Throughput, `N`-byte messages: we publish `count`, a child process
/// (`spawn(["ice-sub", SERVICE, COUNT])`) subscribes; msg/s from the
/// subscriber's connection to its exit, as the native ring's.
pub(crate) fn throughput<const N: usize>(
    spawn: &dyn Fn(&[&str]) -> Child,
    count: u64,
) -> Result<f64, String> {
    let node = node()?;
    let svc_name = service("tput");
    let svc = node
        .service_builder(&name(&svc_name)?)
        .publish_subscribe::<[u8; N]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(4096)
        .enable_safe_overflow(false)
        .create()
        .map_err(|e| err("service")(&e))?;
    let publisher = svc
        .publisher_builder()
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()
        .map_err(|e| err("publisher")(&e))?;
    let mut child = spawn(&["ice-sub", &svc_name, &count.to_string(), &N.to_string()]);
    wait_for_subscribers(&svc, &mut child)?;
    let start = Instant::now();
    let mut msg = [0x5au8; N];
    for i in 0..count {
        msg[0] = i.to_le_bytes()[0] | 1;
        let sample = publisher.loan_uninit().map_err(|e| err("loan")(&e))?;
        sample
            .write_payload(msg)
            .send()
            .map_err(|e| err("send")(&e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err("subscriber")(&e))?;
    if !out.status.success() {
        return Err(format!(
            "iceoryx2 subscriber process failed: {}",
            out.status
        ));
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

/// The subscriber end of [`throughput`]: receives `count` messages, busy-
/// waiting, checks every one.
pub(crate) fn subscribe<const N: usize>(svc_name: &str, count: u64) -> Result<(), String> {
    let node = node()?;
    let svc = node
        .service_builder(&name(svc_name)?)
        .publish_subscribe::<[u8; N]>()
        .open()
        .map_err(|e| err("open service")(&e))?;
    let sub = svc
        .subscriber_builder()
        .create()
        .map_err(|e| err("subscriber")(&e))?;
    let (mut n, mut sum) = (0u64, 0u64);
    while n < count {
        if let Some(sample) = sub.receive().map_err(|e| err("receive")(&e))? {
            let msg: &[u8; N] = &sample;
            sum += u64::from(msg[0]);
            n += 1;
        }
    }
    if sum < n {
        return Err("iceoryx2 subscriber: lost messages".to_owned());
    }
    Ok(())
}

type Factory<const N: usize> =
    iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8; N], ()>;

/// Opens (or, for the ping end, creates) one direction of the ping-pong.
fn pingpong_service<const N: usize>(
    node: &Node<ipc::Service>,
    svc_name: &str,
    create: bool,
) -> Result<Factory<N>, String> {
    let b = node
        .service_builder(&name(svc_name)?)
        .publish_subscribe::<[u8; N]>();
    if create {
        b.max_publishers(1)
            .max_subscribers(1)
            .history_size(0)
            .subscriber_max_buffer_size(1)
            .enable_safe_overflow(true)
            .create()
            .map_err(|e| err("service")(&e))
    } else {
        b.open().map_err(|e| err("open service")(&e))
    }
}

/// Ping-pong of `N`-byte messages, `round_trips` times, with a child
/// process as the pong end (`spawn(["ice-pong", BASE, COUNT, N])`);
/// returns (one-way, round trip / 2).
pub(crate) fn pingpong<const N: usize>(
    spawn: &dyn Fn(&[&str]) -> Child,
    round_trips: usize,
) -> Result<(Histogram<u64>, Histogram<u64>), String> {
    let node = node()?;
    let base = service("pp");
    let a2b = pingpong_service::<N>(&node, &format!("{base}/a2b"), true)?;
    let b2a = pingpong_service::<N>(&node, &format!("{base}/b2a"), true)?;
    let tx = a2b
        .publisher_builder()
        .create()
        .map_err(|e| err("publisher")(&e))?;
    let rx = b2a
        .subscriber_builder()
        .create()
        .map_err(|e| err("subscriber")(&e))?;
    let mut child = spawn(&["ice-pong", &base, &round_trips.to_string(), &N.to_string()]);
    wait_for_subscribers(&a2b, &mut child)?;
    // The pong end's publisher must be up before the first message.
    let deadline = Instant::now() + Duration::from_secs(60);
    while b2a.dynamic_config().number_of_publishers() < 1 {
        if Instant::now() > deadline {
            return Err("iceoryx2: the pong end never published".to_owned());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut half_rtt = latency::histogram();
    let mut msg = [0x5au8; N];
    for i in 0..round_trips as u64 {
        let t0 = monotonic_ns();
        msg[..8].copy_from_slice(&i.to_le_bytes());
        msg[8..16].copy_from_slice(&t0.to_le_bytes());
        let sample = tx.loan_uninit().map_err(|e| err("loan")(&e))?;
        sample
            .write_payload(msg)
            .send()
            .map_err(|e| err("send")(&e))?;
        let back = loop {
            if let Some(s) = rx.receive().map_err(|e| err("receive")(&e))? {
                break s;
            }
        };
        let rtt = monotonic_ns() - t0;
        if *back != msg {
            return Err("iceoryx2: the pong end answered another message".to_owned());
        }
        latency::record(&mut half_rtt, rtt / 2);
    }
    let out = child.wait_with_output().map_err(|e| err("pong")(&e))?;
    if !out.status.success() {
        return Err(format!("iceoryx2 pong process failed: {}", out.status));
    }
    let one_way = latency::parse(&String::from_utf8_lossy(&out.stdout), "one-way")
        .ok_or("iceoryx2: no one-way samples from the pong end")?;
    Ok((one_way, half_rtt))
}

/// The pong end of [`pingpong`]: echoes `count` messages, busy-waiting,
/// recording each one-way trip before answering; prints the samples.
pub(crate) fn pong<const N: usize>(base: &str, count: usize) -> Result<(), String> {
    let node = node()?;
    let a2b = pingpong_service::<N>(&node, &format!("{base}/a2b"), false)?;
    let b2a = pingpong_service::<N>(&node, &format!("{base}/b2a"), false)?;
    let rx = a2b
        .subscriber_builder()
        .create()
        .map_err(|e| err("subscriber")(&e))?;
    let tx = b2a
        .publisher_builder()
        .create()
        .map_err(|e| err("publisher")(&e))?;
    let mut one_way = Vec::with_capacity(count);
    for _ in 0..count {
        let sample = loop {
            if let Some(s) = rx.receive().map_err(|e| err("receive")(&e))? {
                break s;
            }
        };
        let now = monotonic_ns();
        let msg: [u8; N] = *sample;
        drop(sample);
        let sent = u64::from_le_bytes(msg[8..16].try_into().expect("16 bytes at least"));
        one_way.push(now.saturating_sub(sent));
        let out = tx.loan_uninit().map_err(|e| err("loan")(&e))?;
        out.write_payload(msg).send().map_err(|e| err("send")(&e))?;
    }
    let all: Vec<String> = one_way.iter().map(u64::to_string).collect();
    println!("samples one-way: {}", all.join(" "));
    Ok(())
}

/// Runs the child's role `args` (`ice-sub …` or `ice-pong …`); `None` if
/// `args` is no iceoryx2 role.
pub(crate) fn role(args: &[&str]) -> Option<Result<(), String>> {
    Some(match *args {
        ["ice-sub", svc, count, "16"] => subscribe::<16>(svc, count.parse().ok()?),
        ["ice-sub", svc, count, "64"] => subscribe::<64>(svc, count.parse().ok()?),
        ["ice-pong", base, count, "16"] => pong::<16>(base, count.parse().ok()?),
        ["ice-pong", base, count, "64"] => pong::<64>(base, count.parse().ok()?),
        _ => return None,
    })
}
