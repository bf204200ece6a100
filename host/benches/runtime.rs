//! Cost of the plugin runtime, measured on the bundled memory plugin.
//!
//! Run: `cargo bench -p wasftp --bench runtime`
//!
//! Prints, for each operation, the median over RUNS timed runs (after warm-up)
//! of the time per operation. A run of a fast operation repeats it a number of
//! times and divides, so the timer's resolution does not matter.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasftp::plugin::{EngineOptions, Plugin, PluginSettings, Runtime, SessionContext, WriteOptions};

const RUNS: usize = 11;
const WARMUP: usize = 3;
const KIB: usize = 1024;

fn ctx(tenant: &str) -> SessionContext {
    SessionContext { user: "bench".into(), tenant: tenant.into(), attributes: Vec::new() }
}

fn create() -> WriteOptions {
    WriteOptions { create: true, truncate: true, exclusive: false, append: false, permissions: None }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// Median over RUNS of the per-operation time of `iters` calls of `op`.
async fn measure<F, Fut>(iters: u32, mut op: F) -> Duration
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(RUNS);
    for run in 0..WARMUP + RUNS {
        let started = Instant::now();
        for i in 0..iters {
            op(run as u32 * iters + i).await;
        }
        if run >= WARMUP {
            samples.push(started.elapsed() / iters);
        }
    }
    median(samples)
}

fn memcpy(size: usize, iters: u32) -> Duration {
    let src = vec![0xA5u8; size];
    let mut dst = vec![0u8; size];
    let mut samples = Vec::with_capacity(RUNS);
    for run in 0..WARMUP + RUNS {
        let started = Instant::now();
        for _ in 0..iters {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        }
        if run >= WARMUP {
            samples.push(started.elapsed() / iters);
        }
    }
    median(samples)
}

fn memcpy_alloc(size: usize, iters: u32) -> Duration {
    let src = vec![0xA5u8; size];
    let mut samples = Vec::with_capacity(RUNS);
    for run in 0..WARMUP + RUNS {
        let started = Instant::now();
        for _ in 0..iters {
            let v = black_box(&src).to_vec();
            black_box(v);
        }
        if run >= WARMUP {
            samples.push(started.elapsed() / iters);
        }
    }
    median(samples)
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn throughput(size: usize, d: Duration) -> String {
    let gib_s = size as f64 / d.as_secs_f64() / (1u64 << 30) as f64;
    format!("{gib_s:.2} GiB/s")
}

async fn bench(rt: Arc<Runtime>) -> anyhow::Result<()> {
    let bytes = wasftp::plugin::bundled::get("memory").expect("memory plugin is bundled");
    let settings = PluginSettings::default();

    let t = Instant::now();
    let plugin: Arc<Plugin> = rt.load("memory", bytes, settings.clone()).await?;
    let load = t.elapsed();

    // Instantiation: a session of a tenant never seen = a new instance + init
    // + open-session. Each run uses a new tenant (instances are kept, so the
    // count stays small).
    let mut tenant = 0u32;
    let instantiate = measure(1, |_| {
        tenant += 1;
        let plugin = plugin.clone();
        let name = format!("bench-tenant-{tenant}");
        async move {
            black_box(plugin.open_session(ctx(&name)).await.expect("open-session"));
        }
    })
    .await;
    // A session on an existing tenant's instance, for comparison. Sessions
    // are kept until the run ends: dropping one queues its guest-side drop on
    // the instance, which would otherwise be timed too.
    let mut samples = Vec::with_capacity(RUNS);
    for run in 0..WARMUP + RUNS {
        let mut sessions = Vec::with_capacity(50);
        let started = Instant::now();
        for _ in 0..50 {
            sessions.push(plugin.open_session(ctx("bench-tenant-1")).await?);
        }
        let elapsed = started.elapsed();
        drop(black_box(sessions));
        if run >= WARMUP {
            samples.push(elapsed / 50);
        }
    }
    let reopen = median(samples);

    let s = plugin.open_session(ctx("bench-data")).await?;
    let mut rows: Vec<(String, Duration, String)> = vec![
        ("load (compile, cached) + probe".into(), load, String::new()),
        ("instantiate (new tenant: instance + init + open-session)".into(), instantiate, String::new()),
        ("open-session on an existing instance".into(), reopen, String::new()),
    ];

    let file_info = measure(200, |_| {
        let s = &s;
        async move {
            black_box(s.file_info("/").await.expect("file-info"));
        }
    })
    .await;
    rows.push(("file-info (smallest round trip)".into(), file_info, String::new()));

    for size in [32 * KIB, 256 * KIB] {
        let path = format!("/file-{size}");
        let w = s.begin_write(&path, create()).await?;
        w.write_chunk(0, vec![0x5Au8; size]).await?;
        w.finish().await?;
        let reader = s.open_read(&path, None).await?;
        let iters = if size > 64 * KIB { 50 } else { 200 };
        let read = measure(iters, |_| {
            let reader = &reader;
            async move {
                let data = reader.read(0, size as u32).await.expect("read");
                assert_eq!(data.len(), size);
                black_box(data);
            }
        })
        .await;
        rows.push((format!("read {} KiB via runtime", size / KIB), read, throughput(size, read)));
        let copy = memcpy(size, iters * 10);
        rows.push((format!("  memcpy {} KiB in-process", size / KIB), copy, throughput(size, copy)));
        let copy_alloc = memcpy_alloc(size, iters * 10);
        rows.push((format!("  Vec alloc + copy {} KiB in-process", size / KIB), copy_alloc, throughput(size, copy_alloc)));
    }

    for size in [32 * KIB, 256 * KIB] {
        let chunk = vec![0xC3u8; size];
        let iters: u32 = if size > 64 * KIB { 40 } else { 200 };
        let path = format!("/write-{size}");
        // Sequential chunks into one writer per run; the writer is aborted
        // after the run (not timed), so memory use stays bounded.
        let mut samples = Vec::with_capacity(RUNS);
        for run in 0..WARMUP + RUNS {
            let w = s.begin_write(&path, create()).await?;
            let started = Instant::now();
            for i in 0..iters {
                w.write_chunk(i as u64 * size as u64, black_box(&chunk[..])).await?;
            }
            let elapsed = started.elapsed();
            w.abort().await?;
            if run >= WARMUP {
                samples.push(elapsed / iters);
            }
        }
        let write = median(samples);
        rows.push((format!("write-chunk {} KiB via runtime", size / KIB), write, throughput(size, write)));
    }

    println!();
    println!(
        "wasftp plugin runtime, memory plugin (pooling allocator: {}; median of {RUNS} runs after {WARMUP} warm-up)",
        rt.pooling()
    );
    println!("{:<60} {:>12} {:>12}", "operation", "time/op", "throughput");
    println!("{}", "-".repeat(86));
    for (name, d, tp) in rows {
        println!("{name:<60} {:>12} {tp:>12}", fmt(d));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let rt = Runtime::new(&EngineOptions::default())?;
    tokio.block_on(bench(rt))
}
