//! How guest calls share the guest threads (`plugin/executor.rs`): a call
//! waiting in a host call holds no thread, tenants take turns, a call whose
//! caller gave up before it started never runs, and a call that reaches its
//! wall-clock limit is interrupted there.

mod runtime_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime_support::{bounded, ctx, memory_plugin, memory_session, put};
use wasftp::plugin::{CallTimeouts, EngineOptions, Plugin, PluginSettings, PoolLimits, Runtime, RuntimeStats, StorageError};

fn slow_bytes() -> Vec<u8> {
    let path = env!("WASFTP_SLOW_PLUGIN");
    std::fs::read(path).unwrap_or_else(|e| panic!("reading the slow plugin {path}: {e}"))
}

fn runtime_with_threads(threads: usize) -> Arc<Runtime> {
    Runtime::new(&EngineOptions { max_guest_threads: threads, ..EngineOptions::default() }).expect("creating the plugin runtime")
}

async fn slow(rt: &Runtime, name: &str, settings: PluginSettings) -> Arc<Plugin> {
    bounded(rt.load(name, &slow_bytes(), settings)).await.expect("loading the slow plugin")
}

fn config(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Before: eve's 40 calls sleeping in the guest held all 4 guest threads,
/// and bob's calls waited for them (3 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_waiting_calls_do_not_stall_another_tenant() {
    let rt = runtime_with_threads(4);
    let settings = PluginSettings { config: config(&[("scope", "stateless")]), ..PluginSettings::default() };
    let eve_plugin = slow(&rt, "slow", settings).await;
    let memory = memory_plugin(&rt).await;
    let bob = memory_session(&memory, "bob", "bobs").await;
    put(&bob, "/f", b"bob's file").await;

    let mut waiting = Vec::new();
    for i in 0..10 {
        let session = Arc::new(bounded(eve_plugin.open_session(ctx(&format!("eve{i}"), "eves"))).await.unwrap());
        for _ in 0..4 {
            let session = session.clone();
            waiting.push(tokio::spawn(async move { session.file_info("/.sleep/3000").await }));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let until = Instant::now() + Duration::from_millis(1500);
    let mut slowest = Duration::ZERO;
    let mut ops = 0;
    while Instant::now() < until {
        let started = Instant::now();
        assert_eq!(bounded(bob.file_info("/f")).await.unwrap().size, 10);
        put(&bob, "/g", &[7u8; 1024]).await;
        slowest = slowest.max(started.elapsed());
        ops += 1;
    }
    assert!(slowest < Duration::from_millis(500), "bob waited {slowest:?} behind eve's waiting calls");
    assert!(ops >= 10, "bob made only {ops} stat+upload rounds in 1.5 s");
    assert!(waiting.iter().all(|call| !call.is_finished()), "eve's calls are still waiting");
    assert!(rt.guest_threads() <= 4);
    for call in waiting {
        assert_eq!(bounded(call).await.unwrap().unwrap().size, 3000, "eve's calls all end well");
    }
}

/// Before: the rename waited for the only guest thread, its caller was
/// told "no answer", and it still renamed the file once the thread was free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_caller_gave_up_before_it_started_never_runs() {
    let rt = runtime_with_threads(1);
    let spinner = slow(&rt, "spinner", PluginSettings::default()).await;
    let timeouts = CallTimeouts { commit: Duration::from_secs(1), ..CallTimeouts::default() };
    let renamer = slow(&rt, "renamer", PluginSettings { timeouts, ..PluginSettings::default() }).await;
    let sam = bounded(renamer.open_session(ctx("sam", "acme"))).await.unwrap();
    let w = bounded(sam.begin_write("/x", runtime_support::opts(true, true, false, false))).await.unwrap();
    bounded(w.write_chunk(0, b"x".to_vec())).await.unwrap();
    bounded(w.finish()).await.unwrap();

    // Another tenant computes on the only thread for 2.5 s.
    let spin_session = Arc::new(bounded(spinner.open_session(ctx("spin", "other"))).await.unwrap());
    let spin = tokio::spawn({
        let s = spin_session.clone();
        async move { s.file_info("/.spin/2500").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let renamed = bounded(sam.rename("/x", "/y", false)).await;
    match &renamed {
        Err(StorageError::Io(message)) => assert!(message.contains("never started"), "{message}"),
        other => panic!("expected no answer, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(1500), "answered after {:?}", started.elapsed());
    bounded(spin).await.unwrap().expect("the spinner's call ends well");
    assert_eq!(bounded(sam.file_info("/x")).await.unwrap().size, 1, "the file was not renamed");
    assert!(matches!(bounded(sam.file_info("/y")).await, Err(StorageError::NotFound)));
    assert_eq!(RuntimeStats::get(&rt.stats().poisoned), 0, "nothing ran, nothing to drop");
}

/// Before: the rename's caller was answered at 1 s, and the rename went on
/// in the instance, landing at 1.5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_at_its_wall_clock_limit_is_interrupted_there() {
    let rt = runtime_with_threads(8);
    let timeouts = CallTimeouts { commit: Duration::from_secs(1), ..CallTimeouts::default() };
    let settings = PluginSettings {
        timeouts,
        pools: PoolLimits { instances_per_session: 1, ..PoolLimits::default() },
        config: config(&[("delay-ms.rename", "1500")]),
        ..PluginSettings::default()
    };
    let plugin = slow(&rt, "slow", settings).await;
    let sam = bounded(plugin.open_session(ctx("sam", "acme"))).await.unwrap();
    let w = bounded(sam.begin_write("/x", runtime_support::opts(true, true, false, false))).await.unwrap();
    bounded(w.write_chunk(0, b"x".to_vec())).await.unwrap();
    bounded(w.finish()).await.unwrap();
    let made = RuntimeStats::get(&rt.stats().instances_created);

    let started = Instant::now();
    let renamed = bounded(sam.rename("/x", "/y", false)).await;
    let took = started.elapsed();
    match &renamed {
        Err(StorageError::Io(message)) => {
            assert!(message.contains("no answer") && message.contains("unknown"), "{message}")
        }
        other => panic!("expected no answer, got {other:?}"),
    }
    assert!(took >= Duration::from_secs(1) && took < Duration::from_millis(1400), "answered after {took:?}");
    // Dropped at the limit, not when the guest would have gone on.
    assert_eq!(RuntimeStats::get(&rt.stats().poisoned), 1, "the instance was dropped at the deadline");
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The tenant-scoped state went with the instance: the rename never
    // landed in anything the tenant can see.
    assert!(matches!(bounded(sam.file_info("/y")).await, Err(StorageError::NotFound)));
    assert_eq!(RuntimeStats::get(&rt.stats().instances_created), made + 1, "the next call runs on a fresh instance");
}

/// Before: the second stat got the instance with 0.3 s of its 2 s left,
/// started, was interrupted at its limit, and the instance went with the
/// tenant's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_left_with_little_time_is_not_started_and_the_instance_stays() {
    let rt = runtime_with_threads(8);
    let timeouts = CallTimeouts { metadata: Duration::from_secs(2), ..CallTimeouts::default() };
    let settings = PluginSettings {
        timeouts,
        pools: PoolLimits { instances_per_session: 1, ..PoolLimits::default() },
        ..PluginSettings::default()
    };
    let plugin = slow(&rt, "slow", settings).await;
    let sam = Arc::new(bounded(plugin.open_session(ctx("sam", "acme"))).await.unwrap());
    let w = bounded(sam.begin_write("/x", runtime_support::opts(true, true, false, false))).await.unwrap();
    bounded(w.write_chunk(0, b"x".to_vec())).await.unwrap();
    bounded(w.finish()).await.unwrap();

    let first = tokio::spawn({
        let sam = sam.clone();
        async move { sam.file_info("/.sleep/1700").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = bounded(sam.file_info("/.sleep/600")).await;
    match &second {
        Err(StorageError::Io(message)) => assert!(message.contains("never started"), "{message}"),
        other => panic!("expected no answer, got {other:?}"),
    }
    assert_eq!(bounded(first).await.unwrap().unwrap().size, 1700, "the first call ends well");
    assert_eq!(RuntimeStats::get(&rt.stats().poisoned), 0, "no instance was dropped");
    assert_eq!(bounded(sam.file_info("/x")).await.unwrap().size, 1, "the tenant's file is still there");
}

/// A call that waits in a host call and one that computes, of one tenant,
/// both at the tenant's cap (eve's tenant has a cap of its own, 2, below
/// the plugin's 4): another tenant's calls still run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_computing_at_its_cap_leaves_threads_for_others() {
    let rt = runtime_with_threads(8);
    let settings = PluginSettings {
        pools: PoolLimits {
            guest_threads_per_tenant: 4,
            guest_threads_by_tenant: [("eves".to_string(), 2)].into(),
            instances_per_session: 4,
            ..PoolLimits::default()
        },
        config: config(&[("scope", "stateless")]),
        ..PluginSettings::default()
    };
    let spinner = slow(&rt, "slow", settings).await;
    let memory = memory_plugin(&rt).await;
    let bob = memory_session(&memory, "bob", "bobs").await;
    put(&bob, "/f", b"bob").await;
    let mut spins = Vec::new();
    let spinning = Instant::now();
    for i in 0..3 {
        let s = Arc::new(bounded(spinner.open_session(ctx(&format!("eve{i}"), "eves"))).await.unwrap());
        for _ in 0..4 {
            let s = s.clone();
            spins.push(tokio::spawn(async move { s.file_info("/.spin/400").await }));
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(bounded(bob.file_info("/f")).await.unwrap().size, 3);
    }
    assert!(started.elapsed() < Duration::from_millis(500), "bob's 20 stats took {:?}", started.elapsed());
    for spin in spins {
        bounded(spin).await.unwrap().expect("eve's calls end well, two at a time");
    }
    // 12 calls of 400 ms, 2 at a time (without the cap, all 12 at once: 0.4 s).
    let took = spinning.elapsed();
    assert!(took >= Duration::from_millis(2200), "eve's 12 spins ended after {took:?}: more than 2 ran at once");
}
