//! Fairness between tenants: bob (memory plugin) loops STAT while eve's
//! sessions keep a guest spinning (`stat /spin` on the adversarial plugin,
//! deadline 1000 ms). Prints bob's STAT latency (p50, p99) and count, and
//! how long after its start each of eve's calls was interrupted, for 0, 2
//! and 4 spinning sessions; medians over RUNS runs.
//!
//! Run: `bash bench/fairness.sh` (or `cargo bench -p wasftp-tests --bench fairness`).

#[path = "../tests/server_support/mod.rs"]
mod server_support;
#[path = "../tests/wire_support/mod.rs"]
mod wire_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use server_support::UserSpec;
use wasftp::config::PluginConfig;
use wire_support::{Body, FXP_STAT, Wire};

const DEADLINE_MS: u64 = 1000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Sample {
    p50: Duration,
    p99: Duration,
    count: usize,
    interrupted: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn one_run(spinners: usize, seconds: u64) -> Sample {
    let server = server_support::start_with([UserSpec::new("bob"), UserSpec::new("eve")], |config| {
        let hostile = PluginConfig {
            source: env!("WASFTP_HOSTILE_PLUGIN").into(),
            call_deadline_ms: DEADLINE_MS,
            ..PluginConfig::default()
        };
        config.plugins.insert("hostile".into(), hostile);
        config.users.iter_mut().find(|u| u.name == "eve").unwrap().plugin = "hostile".into();
    })
    .await;
    let server = Arc::new(server);
    let stop = Arc::new(AtomicBool::new(false));
    let mut eves = Vec::new();
    for _ in 0..spinners {
        let (server, stop) = (server.clone(), stop.clone());
        eves.push(tokio::spawn(async move {
            let mut interrupted = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let mut wire = Wire::open(&server, "eve", 3).await;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let reply = wire.call(FXP_STAT, Body::new().string("/spin")).await;
                    interrupted.push(started.elapsed());
                    if reply.status() != 4 {
                        break;
                    }
                }
            }
            interrupted
        }));
    }
    // Let eve's guests start spinning.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bob = Wire::open(&server, "bob", 3).await;
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        let started = Instant::now();
        let reply = bob.call(FXP_STAT, Body::new().string(".")).await;
        latencies.push(started.elapsed());
        assert_eq!(reply.kind, wire_support::FXP_ATTRS, "bob's STAT answered");
    }
    stop.store(true, Ordering::Relaxed);
    let mut interrupted = Vec::new();
    for eve in eves {
        interrupted.extend(eve.await.expect("eve's task"));
    }
    latencies.sort();
    interrupted.sort();
    Sample { p50: percentile(&latencies, 0.5), p99: percentile(&latencies, 0.99), count: latencies.len(), interrupted }
}

fn median<T: Ord + Copy>(mut xs: Vec<T>) -> T {
    xs.sort();
    xs[xs.len() / 2]
}

#[tokio::main]
async fn main() {
    let runs = env_or("RUNS", 3) as usize;
    let seconds = env_or("SECONDS", 8);
    println!("bob loops STAT for {seconds} s while eve's sessions spin (deadline {DEADLINE_MS} ms); medians of {runs} runs");
    println!("| eve's spinning sessions | bob p50 | bob p99 | bob's STATs | eve interrupted after: median | max |");
    println!("|---|---|---|---|---|---|");
    for spinners in [0usize, 2, 4] {
        let mut samples = Vec::new();
        for _ in 0..runs {
            samples.push(one_run(spinners, seconds).await);
        }
        let p50 = median(samples.iter().map(|s| s.p50).collect());
        let p99 = median(samples.iter().map(|s| s.p99).collect());
        let count = median(samples.iter().map(|s| s.count).collect());
        let (int_median, int_max) = if spinners == 0 {
            ("-".to_string(), "-".to_string())
        } else {
            let medians = samples.iter().map(|s| percentile(&s.interrupted, 0.5)).collect();
            let maxes = samples.iter().map(|s| s.interrupted.last().copied().unwrap_or_default()).collect::<Vec<_>>();
            (format!("{:.0} ms", median(medians).as_secs_f64() * 1e3), format!("{:.0} ms", maxes.iter().max().unwrap().as_secs_f64() * 1e3))
        };
        println!(
            "| {spinners} | {:.2} ms | {:.2} ms | {count} | {int_median} | {int_max} |",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
}
