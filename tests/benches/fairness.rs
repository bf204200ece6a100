//! Fairness between tenants: bob (memory plugin) loops STAT while eve's
//! tenant does its worst, one scenario per row:
//! - quiet: eve does nothing;
//! - spinning: eve's sessions keep a guest computing (`stat /spin` on the
//!   adversarial plugin, deadline 1000 ms);
//! - waiting: eve holds hundreds of calls waiting in a host call (`stat
//!   /.sleep/MS` on the slow plugin, stateless, 4 instances a session);
//! - sessions: eve opens as many logins as the server lets one user have.
//!
//! Prints, as medians over RUNS runs: bob's STAT latency (p50, p99), his
//! STAT count and errors, how long bob's login took once eve was at it,
//! and what eve got (interrupted after, waiting calls held, logins).
//!
//! Run: `bash bench/fairness.sh` (or `cargo bench -p wasftp-tests --bench fairness`).

#[path = "../tests/server_support/mod.rs"]
mod server_support;
#[path = "../tests/wire_support/mod.rs"]
mod wire_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use server_support::{TestServer, UserSpec};
use wasftp::config::PluginConfig;
use wire_support::{Body, FXP_STAT, Wire};

const DEADLINE_MS: u64 = 1000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy, Debug)]
enum Scenario {
    Quiet,
    Spinning(usize),
    /// Logins, each with a pipeline of this many sleeping STATs.
    Waiting { logins: usize, calls: usize },
    Sessions,
}

impl Scenario {
    fn label(&self) -> String {
        match self {
            Scenario::Quiet => "quiet".into(),
            Scenario::Spinning(n) => format!("{n} sessions spinning"),
            Scenario::Waiting { logins, calls } => format!("{} calls waiting ({logins} logins)", logins * calls),
            Scenario::Sessions => "every session eve may open".into(),
        }
    }
}

struct Sample {
    p50: Duration,
    p99: Duration,
    count: usize,
    errors: usize,
    bob_login: Duration,
    eve: String,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn server(scenario: Scenario) -> Arc<TestServer> {
    let server = server_support::start_with([UserSpec::new("bob"), UserSpec::new("eve")], |config| {
        let hostile = PluginConfig {
            source: env!("WASFTP_HOSTILE_PLUGIN").into(),
            call_deadline_ms: DEADLINE_MS,
            // Eve's spinners must keep spinning for the whole run: with her
            // breaker open, her calls would be refused and the row measure nothing.
            breaker_failures: 0,
            ..PluginConfig::default()
        };
        config.plugins.insert("hostile".into(), hostile);
        let mut slow = PluginConfig { source: env!("WASFTP_SLOW_PLUGIN").into(), ..PluginConfig::default() };
        slow.config.insert("scope".into(), "stateless".into());
        config.plugins.insert("slow".into(), slow);
        let eve_plugin = match scenario {
            Scenario::Spinning(_) => "hostile",
            Scenario::Waiting { .. } => "slow",
            Scenario::Quiet | Scenario::Sessions => "memory",
        };
        config.users.iter_mut().find(|u| u.name == "eve").unwrap().plugin = eve_plugin.into();
    })
    .await;
    Arc::new(server)
}

/// Eve's part of one run, until `stop`; returns what she got, in words.
async fn eve(server: Arc<TestServer>, scenario: Scenario, stop: Arc<AtomicBool>, seconds: u64) -> String {
    match scenario {
        Scenario::Quiet => "-".into(),
        Scenario::Spinning(spinners) => {
            let mut tasks = Vec::new();
            for _ in 0..spinners {
                let (server, stop) = (server.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
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
            let mut interrupted = Vec::new();
            for task in tasks {
                interrupted.extend(task.await.expect("eve's task"));
            }
            interrupted.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            format!(
                "interrupted after {:.0} ms (median), {:.0} ms (max)",
                ms(percentile(&interrupted, 0.5)),
                ms(interrupted.last().copied().unwrap_or_default())
            )
        }
        Scenario::Waiting { logins, calls } => {
            let sleep = format!("/.sleep/{}", (seconds + 5) * 1000);
            let held = Arc::new(AtomicUsize::new(0));
            // In batches below max_unauthenticated_per_ip (32).
            let mut wires = Vec::new();
            for batch in (0..logins).collect::<Vec<_>>().chunks(16) {
                let mut tasks = Vec::new();
                for _ in batch {
                    let (server, sleep, held) = (server.clone(), sleep.clone(), held.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut wire = Wire::open(&server, "eve", 3).await;
                        for _ in 0..calls {
                            wire.send(FXP_STAT, Body::new().string(&sleep)).await;
                        }
                        held.fetch_add(calls, Ordering::Relaxed);
                        // Kept open (its calls waiting) until the run ends.
                        wire
                    }));
                }
                for task in tasks {
                    wires.push(task.await.expect("eve's login"));
                }
            }
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            drop(wires);
            format!("{} calls sent", held.load(Ordering::Relaxed))
        }
        Scenario::Sessions => {
            let key = Arc::new(russh::keys::load_secret_key(&server.user("eve").key, None).expect("eve's key"));
            let mut wires = Vec::new();
            loop {
                let mut ssh = server.connect().await;
                let accepted =
                    ssh.authenticate_publickey("eve", russh::keys::PrivateKeyWithHashAlg::new(key.clone(), None)).await;
                if !matches!(accepted, Ok(result) if result.success()) {
                    break;
                }
                // A login past eve's session cap is accepted, then cut with
                // its reason: only one that opens a channel is held.
                let channel = tokio::time::timeout(Duration::from_secs(5), ssh.channel_open_session()).await;
                match channel {
                    Ok(Ok(channel)) => wires.push((ssh, channel)),
                    _ => break,
                }
                if wires.len() >= 2000 {
                    break;
                }
            }
            let logins = wires.len();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            drop(wires);
            format!("{logins} logins held")
        }
    }
}

async fn one_run(scenario: Scenario, seconds: u64) -> Sample {
    let server = server(scenario).await;
    let stop = Arc::new(AtomicBool::new(false));
    let eve_task = tokio::spawn(eve(server.clone(), scenario, stop.clone(), seconds));
    // Let eve get going (her logins, her calls in place).
    tokio::time::sleep(Duration::from_millis(match scenario {
        Scenario::Waiting { .. } | Scenario::Sessions => 3000,
        _ => 300,
    }))
    .await;
    let started = Instant::now();
    let mut bob = Wire::open(&server, "bob", 3).await;
    let bob_login = started.elapsed();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        let started = Instant::now();
        let reply = bob.call(FXP_STAT, Body::new().string(".")).await;
        latencies.push(started.elapsed());
        if reply.kind != wire_support::FXP_ATTRS {
            errors += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let eve = eve_task.await.expect("eve's part");
    drop(bob);
    latencies.sort();
    Sample {
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        count: latencies.len(),
        errors,
        bob_login,
        eve,
    }
}

fn median<T: PartialOrd + Copy>(mut xs: Vec<T>) -> T {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    let runs = env_or("RUNS", 3) as usize;
    let seconds = env_or("SECONDS", 8);
    let waiting_logins = env_or("WAITING_LOGINS", 64) as usize;
    let scenarios = [
        Scenario::Quiet,
        Scenario::Spinning(2),
        Scenario::Spinning(4),
        Scenario::Waiting { logins: waiting_logins, calls: 8 },
        Scenario::Sessions,
    ];
    // ROWS=spinning (a part of the label) runs only the rows it names.
    let rows = std::env::var("ROWS").unwrap_or_default();
    let scenarios: Vec<Scenario> = scenarios.into_iter().filter(|s| rows.is_empty() || s.label().contains(rows.as_str())).collect();
    println!("bob loops STAT for {seconds} s while eve's tenant does its worst; medians of {runs} runs");
    println!("| eve | bob p50 | bob p99 | p99 vs quiet | bob's STATs | bob's errors | bob's login | eve got |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut quiet_p99 = None;
    for scenario in scenarios {
        let mut samples = Vec::new();
        for _ in 0..runs {
            samples.push(one_run(scenario, seconds).await);
        }
        let p50 = median(samples.iter().map(|s| s.p50).collect());
        let p99 = median(samples.iter().map(|s| s.p99).collect());
        let count = median(samples.iter().map(|s| s.count).collect());
        let errors: usize = samples.iter().map(|s| s.errors).sum();
        let login = median(samples.iter().map(|s| s.bob_login).collect());
        let quiet = *quiet_p99.get_or_insert(p99);
        let ratio = p99.as_secs_f64() / quiet.as_secs_f64().max(1e-9);
        println!(
            "| {} | {} | {} | {ratio:.2}x | {count} | {errors} | {} | {} |",
            scenario.label(),
            ms(p50),
            ms(p99),
            ms(login),
            samples[samples.len() / 2].eve
        );
    }
}
