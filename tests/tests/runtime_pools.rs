//! Instance pools and per-kind timeouts, with the slow test plugin
//! (`tests/plugins/slow`): stateless sessions spread over several
//! instances, reuse them across sessions and let idle ones go; tenants are
//! capped with a clear refusal; a call that waits too long fails its
//! request and is interrupted.

mod runtime_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime_support::{bounded, ctx, memory_plugin, runtime};
use wasftp::plugin::{CallTimeouts, Plugin, PluginSettings, PoolLimits, Runtime, RuntimeStats, StorageError};

fn slow_bytes() -> Vec<u8> {
    let path = env!("WASFTP_SLOW_PLUGIN");
    std::fs::read(path).unwrap_or_else(|e| panic!("reading the slow plugin {path}: {e}"))
}

fn stat(counter: &std::sync::atomic::AtomicU64) -> u64 {
    RuntimeStats::get(counter)
}

async fn slow(rt: &Runtime, scope: &str, pools: PoolLimits, timeouts: CallTimeouts) -> Arc<Plugin> {
    let settings = PluginSettings {
        pools,
        timeouts,
        config: vec![("scope".into(), scope.into())],
        ..PluginSettings::default()
    };
    bounded(rt.load("slow", &slow_bytes(), settings)).await.expect("loading the slow plugin")
}

async fn stateless(rt: &Runtime, pools: PoolLimits) -> Arc<Plugin> {
    slow(rt, "stateless", pools, CallTimeouts::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_call_on_one_instance_does_not_block_the_session() {
    let rt = runtime();
    let plugin = stateless(&rt, PoolLimits { instances_per_session: 2, ..PoolLimits::default() }).await;
    let s = Arc::new(bounded(plugin.open_session(ctx("sam", "acme"))).await.unwrap());
    let hung = tokio::spawn({
        let s = s.clone();
        async move { s.file_info("/.sleep/3000").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let reader = bounded(s.open_read("/.pattern/1000", None)).await.unwrap();
    let data = bounded(reader.read(0, 1000)).await.unwrap();
    let took = started.elapsed();
    assert_eq!(data, (0..1000u64).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    assert!(took < Duration::from_secs(2), "the download waited for the hung call: {took:?}");
    assert!(!hung.is_finished(), "the hung call is still waiting");
    assert_eq!(s.instances(), 2, "the download ran on a second instance");
    assert_eq!(bounded(hung).await.unwrap().unwrap().size, 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_downloads_in_one_session_run_at_once() {
    let rt = runtime();
    let settings = PluginSettings {
        config: vec![("scope".into(), "stateless".into()), ("delay-ms".into(), "500".into())],
        ..PluginSettings::default()
    };
    let plugin = bounded(rt.load("slow", &slow_bytes(), settings)).await.unwrap();
    let s = bounded(plugin.open_session(ctx("sam", "acme"))).await.unwrap();
    let (a, b) = tokio::join!(s.open_read("/.pattern/100", None), s.open_read("/.pattern/100", None));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(s.instances(), 2, "each reader got an instance of its own");
    // Two reads of 500 ms each, at once: the time of one, not of two.
    let started = Instant::now();
    let (ra, rb) = tokio::join!(a.read(0, 100), b.read(0, 100));
    let took = started.elapsed();
    assert_eq!(ra.unwrap(), rb.unwrap());
    assert!(took < Duration::from_millis(900), "the reads ran one after the other: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_serve_the_next_session_then_are_evicted() {
    let rt = runtime();
    let pools = PoolLimits { idle_evict: Duration::from_millis(300), ..PoolLimits::default() };
    let plugin = stateless(&rt, pools).await;
    let s = bounded(plugin.open_session(ctx("sam", "acme"))).await.unwrap();
    bounded(s.file_info("/.pattern/1")).await.unwrap();
    drop(s);
    assert_eq!(plugin.idle_instances(), 1, "the instance waits for the tenant's next session");
    let made = stat(&rt.stats().instances_created);

    let s = bounded(plugin.open_session(ctx("sam", "acme"))).await.unwrap();
    assert_eq!(plugin.idle_instances(), 0, "the next session took it");
    assert_eq!(stat(&rt.stats().instances_created), made, "no new instance was made");
    // Another tenant never gets it.
    drop(s);
    let other = bounded(plugin.open_session(ctx("ona", "other"))).await.unwrap();
    assert_eq!(stat(&rt.stats().instances_created), made + 1, "another tenant gets its own instance");
    drop(other);
    assert_eq!(plugin.idle_instances(), 2);

    tokio::time::sleep(Duration::from_millis(400)).await;
    plugin.evict_idle();
    assert_eq!(plugin.idle_instances(), 0, "idle past idle_evict: dropped");
    assert_eq!(plugin.tenants(), 0);
}

/// The instance allocator is sized for the sessions' instances plus one
/// session's worth idle per tenant: a tenant never keeps more idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_keeps_at_most_one_sessions_worth_of_idle_instances() {
    let rt = runtime();
    let plugin = stateless(&rt, PoolLimits { instances_per_session: 2, ..PoolLimits::default() }).await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let s = bounded(plugin.open_session(ctx("sam", "acme"))).await.unwrap();
        // Two readers: the first keeps its instance, the second gets another.
        let a = bounded(s.open_read("/.pattern/10", None)).await.unwrap();
        let b = bounded(s.open_read("/.pattern/10", None)).await.unwrap();
        sessions.push((s, a, b));
    }
    assert_eq!(stat(&rt.stats().instances_created), 6 + 1, "two per session, and the load probe");
    drop(sessions);
    assert_eq!(plugin.idle_instances(), 2, "one session's worth kept idle, the rest dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_tenants_a_login_is_refused_clearly() {
    let rt = runtime();
    let pools = PoolLimits { max_tenants: 2, ..PoolLimits::default() };
    let plugin = stateless(&rt, pools).await;
    let a = bounded(plugin.open_session(ctx("a", "t1"))).await.unwrap();
    let _b = bounded(plugin.open_session(ctx("b", "t2"))).await.unwrap();
    // More sessions of a tenant already served are fine.
    let _a2 = bounded(plugin.open_session(ctx("a", "t1"))).await.unwrap();
    let refused = bounded(plugin.open_session(ctx("c", "t3"))).await.err().expect("a third tenant is refused");
    assert!(refused.to_string().contains("tenant capacity reached"), "{refused}");
    // A stateless tenant without sessions holds nothing: its place is free.
    drop(a);
    drop(_a2);
    bounded(plugin.open_session(ctx("c", "t3"))).await.expect("t1 left, t3 fits");

    // A tenant-scoped plugin keeps its tenants' state: their places stay taken.
    let memory = {
        let bytes = wasftp::plugin::bundled::get("memory").unwrap();
        let settings = PluginSettings { pools: PoolLimits { max_tenants: 1, ..PoolLimits::default() }, ..PluginSettings::default() };
        bounded(rt.load("memory", bytes, settings)).await.unwrap()
    };
    drop(bounded(memory.open_session(ctx("a", "t1"))).await.unwrap());
    let refused = bounded(memory.open_session(ctx("b", "t2"))).await.err().expect("refused");
    assert!(refused.to_string().contains("tenant capacity reached"), "{refused}");
}

/// A call that waits past its wall clock is interrupted there: its instance
/// is dropped (so it cannot change anything after its client was told it
/// failed) and the session goes on on a fresh one. (Before the fair-shares
/// work it kept running, and kept its instance.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_wall_clock_fails_and_is_interrupted() {
    let rt = runtime();
    let timeouts = CallTimeouts { metadata: Duration::from_secs(1), ..CallTimeouts::default() };
    let pools = PoolLimits { instances_per_session: 1, ..PoolLimits::default() };
    let plugin = slow(&rt, "tenant", pools, timeouts).await;
    let s = bounded(plugin.open_session(ctx("sam", "acme"))).await.unwrap();
    let made = stat(&rt.stats().instances_created);

    let started = Instant::now();
    let timed_out = bounded(s.file_info("/.sleep/2500")).await;
    let took = started.elapsed();
    match &timed_out {
        Err(StorageError::Io(message)) => assert!(message.contains("no answer") && message.contains("interrupted"), "{message}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(took >= Duration::from_secs(1) && took < Duration::from_millis(1500), "answered after {took:?}");
    assert_eq!(stat(&rt.stats().timeouts), 1);
    assert_eq!(stat(&rt.stats().poisoned), 1, "dropped at the limit");
    // No wait for the interrupted call: the next one runs at once, fresh.
    let started = Instant::now();
    assert!(matches!(bounded(s.file_info("/kept")).await, Err(StorageError::NotFound)));
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(stat(&rt.stats().instances_created), made + 1);
}

/// A tenant-scoped plugin keeps every session's state in one instance: a
/// trap loses it for all of them (the contract says so), and every session
/// goes on, on a fresh instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_a_tenant_instance_costs_its_state_not_the_sessions() {
    let rt = runtime();
    let plugin = slow(&rt, "tenant", PoolLimits::default(), CallTimeouts::default()).await;
    let one = bounded(plugin.open_session(ctx("a", "acme"))).await.unwrap();
    let two = bounded(plugin.open_session(ctx("b", "acme"))).await.unwrap();
    let w = bounded(one.begin_write("/f", runtime_support::opts(true, true, false, false))).await.unwrap();
    bounded(w.write_chunk(0, b"x".to_vec())).await.unwrap();
    bounded(w.finish()).await.unwrap();
    assert_eq!(bounded(two.file_info("/f")).await.unwrap().size, 1, "sessions of a tenant share state");

    let trapped = bounded(one.file_info("/.panic")).await;
    assert!(matches!(trapped, Err(StorageError::PluginFailed(_))), "{trapped:?}");
    let gone = bounded(two.file_info("/f")).await;
    assert!(matches!(gone, Err(StorageError::NotFound)), "the state went with the instance: {gone:?}");
    bounded(one.make_dir("/again", None)).await.expect("the session goes on");
    assert!(bounded(two.file_info("/again")).await.is_ok(), "on one fresh instance for the tenant");

    // Another tenant's instance is untouched.
    let memory = memory_plugin(&rt).await;
    let other = bounded(memory.open_session(ctx("c", "other"))).await.unwrap();
    bounded(other.make_dir("/d", None)).await.unwrap();
    let _ = bounded(one.file_info("/.panic")).await;
    assert!(bounded(other.file_info("/d")).await.is_ok());
}

/// An instance still busy with a call that timed out is not handed to the
/// tenant's next session, which would wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_never_gets_an_instance_still_busy_with_a_timed_out_call() {
    let rt = runtime();
    let timeouts = CallTimeouts { metadata: Duration::from_secs(1), ..CallTimeouts::default() };
    let pools = PoolLimits { instances_per_session: 1, ..PoolLimits::default() };
    let plugin = slow(&rt, "stateless", pools, timeouts).await;
    let s = bounded(plugin.open_session(ctx("sam", "acme"))).await.unwrap();
    assert!(bounded(s.file_info("/.sleep/4000")).await.is_err(), "times out after 1 s");
    drop(s);
    let next = bounded(plugin.open_session(ctx("sam", "acme"))).await.expect("the next login does not wait for the busy instance");
    assert_eq!(bounded(next.file_info("/.pattern/7")).await.unwrap().size, 7);
}
