//! The adversarial plugin (`tests/plugins/hostile`) against the sandbox:
//! deadlines, memory limits, traps, output validation, init failures, and
//! isolation between tenants while one instance misbehaves.

mod runtime_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime_support::*;
use wasftp::plugin::{InstanceScope, Plugin, PluginSettings, Runtime, RuntimeStats, Session, StorageError};

const DEADLINE: Duration = Duration::from_millis(500);
/// How late an interrupt may land past the deadline (the epoch ticks every 10 ms).
const MARGIN: Duration = Duration::from_millis(100);
const MEMORY_LIMIT: usize = 64 << 20;

fn hostile_bytes() -> Vec<u8> {
    let path = env!("WASFTP_HOSTILE_PLUGIN");
    std::fs::read(path).unwrap_or_else(|e| panic!("reading the hostile plugin {path}: {e}"))
}

fn settings(deadline: Duration, config: &[(&str, &str)]) -> PluginSettings {
    PluginSettings {
        memory_limit: MEMORY_LIMIT,
        call_deadline: deadline,
        config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..PluginSettings::default()
    }
}

async fn hostile(rt: &Runtime, deadline: Duration) -> Arc<Plugin> {
    let plugin = bounded(rt.load("hostile", &hostile_bytes(), settings(deadline, &[]))).await.expect("loading the hostile plugin");
    assert!(matches!(plugin.capabilities().scope, InstanceScope::Stateless), "the hostile plugin is stateless");
    plugin
}

async fn session(plugin: &Plugin, user: &str) -> Session {
    bounded(plugin.open_session(ctx(user, "evil-corp"))).await.expect("opening a hostile session")
}

fn stat(c: &std::sync::atomic::AtomicU64) -> u64 {
    RuntimeStats::get(c)
}

/// `file-info("/ok")` answers a file of 42 bytes: the plugin is healthy.
async fn assert_ok(s: &Session) {
    let info = bounded(s.file_info("/ok")).await.expect("file-info /ok on a healthy instance");
    assert_eq!(info.size, 42);
}

fn assert_plugin_failed<T: std::fmt::Debug>(r: &Result<T, StorageError>, what: &str) -> String {
    match r {
        Err(StorageError::PluginFailed(msg)) => msg.clone(),
        other => panic!("{what}: expected PluginFailed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_is_interrupted_at_the_deadline() {
    let rt = runtime();
    let plugin = hostile(&rt, DEADLINE).await;
    let s = session(&plugin, "spinner").await;
    assert_ok(&s).await;
    let poisoned = stat(&rt.stats().poisoned);
    let timeouts = stat(&rt.stats().timeouts);

    let started = Instant::now();
    let r = bounded(s.file_info("/spin")).await;
    let elapsed = started.elapsed();
    let msg = assert_plugin_failed(&r, "file-info /spin");
    assert!(elapsed < DEADLINE + MARGIN, "interrupted after {elapsed:?}, deadline {DEADLINE:?}: {msg}");
    assert!(elapsed >= DEADLINE - Duration::from_millis(20), "interrupted before the deadline ({elapsed:?})");
    // The caller is answered on the guest's clock; the guest's own thread,
    // lowered in priority, may need a moment of CPU to trap and drop it.
    let until = Instant::now() + Duration::from_secs(5);
    while stat(&rt.stats().poisoned) == poisoned && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stat(&rt.stats().poisoned), poisoned + 1, "the spinning instance is poisoned");
    assert_eq!(stat(&rt.stats().timeouts), timeouts, "the epoch interrupt, not the wall-clock fallback, stopped it");
    assert!(stat(&rt.stats().demoted_calls) >= 1, "the spinning call's thread was lowered in priority");

    // The session goes on, on a fresh instance (the plugin is stateless).
    let started = Instant::now();
    assert_ok(&s).await;
    assert!(started.elapsed() < MARGIN);

    // A new session works.
    let s2 = session(&plugin, "next").await;
    assert_ok(&s2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_ends_the_handles_of_its_instance_and_the_session_goes_on() {
    let rt = runtime();
    let plugin = hostile(&rt, DEADLINE).await;
    let s = session(&plugin, "reader").await;
    let reader = bounded(s.open_read("/huge-read", None)).await.expect("opening a reader");
    let created = stat(&rt.stats().instances_created);
    // Only one instance is in use, so the panic lands on the reader's.
    assert_eq!(s.instances(), 1);
    assert_plugin_failed(&bounded(s.file_info("/panic")).await, "file-info /panic");

    let started = Instant::now();
    let msg = assert_plugin_failed(&bounded(reader.read(0, 10)).await, "a read on the dropped instance");
    assert!(msg.contains("handle is gone"), "{msg}");
    assert!(started.elapsed() < MARGIN, "a gone handle says so at once");
    assert_ok(&s).await;
    assert_eq!(stat(&rt.stats().instances_created), created + 1, "the session reopened on one fresh instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_session_does_not_block_another_session_of_the_same_plugin() {
    let rt = runtime();
    let plugin = hostile(&rt, Duration::from_secs(2)).await;
    let spinner = session(&plugin, "spinner").await;
    let healthy = session(&plugin, "healthy").await;

    let spin_started = Instant::now();
    let spin = tokio::spawn(async move { bounded(spinner.file_info("/spin")).await.map(|_| ()) });
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        assert_ok(&healthy).await;
        latencies.push(t.elapsed());
    }
    assert!(!spin.is_finished(), "the healthy calls ran while the spin was in progress");
    let worst = latencies.iter().max().unwrap();
    assert!(*worst < Duration::from_millis(300), "a healthy call took {worst:?} while another instance spun");
    let r = bounded(spin).await.unwrap();
    assert_plugin_failed(&r, "spin");
    assert!(spin_started.elapsed() >= Duration::from_secs(2) - Duration::from_millis(20));
    assert_ok(&healthy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_hits_the_limit_and_the_host_survives() {
    let rt = runtime();
    let plugin = hostile(&rt, Duration::from_secs(5)).await;
    let s = session(&plugin, "bomber").await;
    let poisoned = stat(&rt.stats().poisoned);

    let refused = stat(&rt.stats().memory_grow_refused);

    let started = Instant::now();
    let r = bounded(s.file_info("/bomb")).await;
    let msg = assert_plugin_failed(&r, "file-info /bomb");
    // It ran out of memory well before the 5 s deadline: the cap refused the
    // growth, the guest's infallible allocation aborted, and that trapped.
    assert!(started.elapsed() < Duration::from_secs(4), "the bomb was stopped by time, not memory: {msg}");
    assert!(msg.contains("out of memory"), "the trap is explained: {msg}");
    assert!(stat(&rt.stats().memory_grow_refused) > refused, "the cap held");
    assert_eq!(stat(&rt.stats().poisoned), poisoned + 1);

    let s2 = session(&plugin, "after-bomb").await;
    assert_ok(&s2).await;
    // Several bombs in a row do not leak: each instance's memory goes with it.
    for i in 0..5 {
        let s = session(&plugin, &format!("bomber-{i}")).await;
        assert_plugin_failed(&bounded(s.file_info("/bomb")).await, "repeated bomb");
    }
    assert_ok(&session(&plugin, "still-fine").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_failure_the_guest_handles_is_an_error_not_a_trap() {
    let rt = runtime();
    let plugin = hostile(&rt, Duration::from_secs(5)).await;
    let s = session(&plugin, "careful").await;
    let poisoned = stat(&rt.stats().poisoned);
    let created = stat(&rt.stats().instances_created);

    // Each round fills memory up to the cap, gets -1 from memory.grow,
    // frees everything and answers no-space; the instance lives on.
    for round in 0..3 {
        let refused = stat(&rt.stats().memory_grow_refused);
        let r = bounded(s.file_info("/bomb-fallible")).await;
        assert!(matches!(r, Err(StorageError::NoSpace)), "round {round}: {r:?}");
        assert!(stat(&rt.stats().memory_grow_refused) > refused, "round {round}: the cap was reached");
        assert_ok(&s).await;
    }
    assert_eq!(stat(&rt.stats().poisoned), poisoned, "no trap, no poisoned instance");
    assert_eq!(stat(&rt.stats().instances_created), created, "the same instance served every call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_a_plugin_failure_and_the_host_survives() {
    let rt = runtime();
    let plugin = hostile(&rt, DEADLINE).await;
    let s = session(&plugin, "panicker").await;
    let poisoned = stat(&rt.stats().poisoned);

    let r = bounded(s.file_info("/panic")).await;
    let msg = assert_plugin_failed(&r, "file-info /panic");
    assert!(!msg.is_empty());
    assert_eq!(stat(&rt.stats().poisoned), poisoned + 1);
    // The session goes on, on a fresh instance.
    assert_ok(&s).await;
    assert_ok(&session(&plugin, "after-panic").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_listings_are_rejected_by_validation() {
    let rt = runtime();
    let plugin = hostile(&rt, Duration::from_secs(5)).await;
    let s = session(&plugin, "lister").await;

    let page = bounded(s.list_dir("/ok", None, 100)).await.expect("a valid listing");
    let names: Vec<_> = page.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);

    for path in ["/slash", "/nul"] {
        let invalid = stat(&rt.stats().invalid_outputs);
        let poisoned = stat(&rt.stats().poisoned);
        let r = bounded(s.list_dir(path, None, 1000)).await;
        let msg = assert_plugin_failed(&r, &format!("list-dir {path}"));
        assert!(msg.contains("invalid plugin output"), "list-dir {path}: {msg}");
        assert!(msg.len() < 1024, "the error text is bounded ({} bytes)", msg.len());
        assert_eq!(stat(&rt.stats().invalid_outputs), invalid + 1, "list-dir {path} counted as invalid output");
        assert_eq!(stat(&rt.stats().poisoned), poisoned, "bad output is refused, the instance is not dropped");
        // The same session keeps working.
        assert_ok(&s).await;
    }
}

/// Outputs larger than a call may return are refused while wasmtime lifts
/// them, before the host allocates them (its default allows 128 MiB per
/// lift): the call fails, the instance is replaced, the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_past_the_bound_are_refused_before_the_host_copies_them() {
    let rt = runtime();
    // Room in the guest to build the outputs: the host's bound, not the
    // guest's memory cap, must be what stops them.
    let settings = PluginSettings { memory_limit: 1 << 30, ..settings(Duration::from_secs(10), &[]) };
    let plugin = bounded(rt.load("hostile", &hostile_bytes(), settings)).await.expect("loading the hostile plugin");
    let s = session(&plugin, "big-outputs").await;
    let bound = wasftp::plugin::HostBounds::default().output_bytes;

    let refused = |r: &str, what: &str| {
        assert!(r.contains("invalid plugin output") && r.contains(&format!("larger than the {bound} bytes")), "{what}: {r}");
        assert!(r.contains("max_output_kib"), "{what} names the setting: {r}");
        assert!(r.len() < 1024, "{what}: the error text is bounded");
    };
    let mut too_large = stat(&rt.stats().outputs_too_large);
    let mut check = |what: &str, r: String| {
        refused(&r, what);
        let now = stat(&rt.stats().outputs_too_large);
        assert_eq!(now, too_large + 1, "{what}: refused by the bound, not by validation after the copy");
        too_large = now;
    };
    // A 120 MiB answer to a 32 KiB read.
    let reader = bounded(s.open_read("/giant-read", None)).await.expect("open-read /giant-read");
    check("a 120 MiB read", assert_plugin_failed(&bounded(reader.read(0, 32 << 10)).await, "read"));
    assert_ok(&s).await;
    // A 2-million-entry page, a 10 MB name, a 100 MiB error, a 10 MB link target.
    check("a 2-million-entry page", assert_plugin_failed(&bounded(s.list_dir("/giant-page", None, 100)).await, "list-dir"));
    check("100 000 entries", assert_plugin_failed(&bounded(s.list_dir("/many", None, 1000)).await, "list-dir"));
    check("a 10 MB name", assert_plugin_failed(&bounded(s.list_dir("/huge-name", None, 100)).await, "list-dir"));
    check("a 100 MiB io error", assert_plugin_failed(&bounded(s.file_info("/huge-error")).await, "file-info"));
    check("a 10 MB link target", assert_plugin_failed(&bounded(s.read_link("/huge")).await, "read-link"));
    assert_ok(&s).await;
    assert_ok(&session(&plugin, "next").await).await;
}

/// A read may return what it asked for even past the plugin's output
/// bound: the bound is never what stops a legitimate large read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_larger_than_the_output_bound_passes() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let s = memory_session(&plugin, "reader", "big-reads").await;
    let bound = wasftp::plugin::HostBounds::default().output_bytes;
    let data: Vec<u8> = (0..bound + (1 << 20)).map(|i| (i % 251) as u8).collect();
    put(&s, "/big", &data).await;
    let reader = bounded(s.open_read("/big", None)).await.expect("open-read /big");
    let read = bounded(reader.read(0, data.len() as u32)).await.expect("one read past the output bound");
    assert_eq!(read.len(), data.len());
    assert!(read == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_link_target_and_oversized_read_are_rejected() {
    let rt = runtime();
    let plugin = hostile(&rt, Duration::from_secs(5)).await;
    let s = session(&plugin, "reader").await;

    let invalid = stat(&rt.stats().invalid_outputs);
    let r = bounded(s.read_link("/huge")).await;
    let msg = assert_plugin_failed(&r, "read-link /huge");
    assert!(msg.contains("invalid plugin output"), "{msg}");
    assert!(msg.len() < 1024);
    assert_eq!(stat(&rt.stats().invalid_outputs), invalid + 1);
    assert_ok(&s).await;

    let reader = bounded(s.open_read("/huge-read", None)).await.expect("open-read /huge-read");
    for len in [1u32, 16, 4096] {
        let r = bounded(reader.read(0, len)).await;
        let msg = assert_plugin_failed(&r, &format!("read of {len} bytes"));
        assert!(msg.contains("invalid plugin output"), "{msg}");
    }
    assert_eq!(stat(&rt.stats().invalid_outputs), invalid + 4);
    assert_ok(&s).await;
}

/// Loading with an `init` that misbehaves fails, quickly, at load or at the
/// first session, and never hangs.
async fn init_failure(config: (&str, &str)) {
    let rt = runtime();
    // Warm the compiled-component cache so the timing below is the init's alone.
    drop(hostile(&rt, DEADLINE).await);

    let bytes = hostile_bytes();
    let started = Instant::now();
    let loaded = tokio::time::timeout(Duration::from_secs(10), rt.load("hostile", &bytes, settings(DEADLINE, &[config])))
        .await
        .unwrap_or_else(|_| panic!("load with init {config:?} hung"));
    match loaded {
        Err(e) => {
            let elapsed = started.elapsed();
            assert!(elapsed < DEADLINE + Duration::from_secs(1), "load with init {config:?} failed only after {elapsed:?}: {e:#}");
        }
        Ok(plugin) => {
            // The probe may have been lenient; the first session must not be.
            let started = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(10), plugin.open_session(ctx("u", "t")))
                .await
                .unwrap_or_else(|_| panic!("open-session with init {config:?} hung"));
            assert_plugin_failed(&r.map(|_| ()), &format!("open-session with init {config:?}"));
            assert!(started.elapsed() < DEADLINE + MARGIN * 2);
        }
    }
    // The runtime is still good for a well-configured load.
    let plugin = hostile(&rt, DEADLINE).await;
    assert_ok(&session(&plugin, "after-init").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_that_spins_fails_within_the_deadline() {
    init_failure(("init", "spin")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_that_panics_fails_cleanly() {
    init_failure(("init", "panic")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_tenant_does_not_block_another_tenants_memory_session() {
    let rt = runtime();
    let spin_deadline = Duration::from_secs(2);
    let evil = hostile(&rt, spin_deadline).await;
    let memory = memory_plugin(&rt).await;

    // The hostile tenant's session is open before the spin starts, so the
    // spawned task does nothing but spin.
    let spinner = bounded(evil.open_session(ctx("mallory", "evil"))).await.unwrap();
    let spin_started = Instant::now();
    let spin = tokio::spawn(async move { bounded(spinner.file_info("/spin")).await.map(|_| ()) });

    let t = Instant::now();
    let s = memory_session(&memory, "alice", "good").await;
    put(&s, "/doc", &pattern(64 * 1024, 9)).await;
    assert_eq!(get(&s, "/doc").await, pattern(64 * 1024, 9));
    assert_eq!(names(&s, "/").await, vec!["doc".to_string()]);
    let memory_time = t.elapsed();

    assert!(!spin.is_finished(), "the memory calls overlapped the spin");
    assert!(
        memory_time < Duration::from_millis(1000),
        "memory calls took {memory_time:?} while another tenant's instance spun"
    );
    let r = bounded(spin).await.unwrap();
    assert_plugin_failed(&r, "spin");
    assert!(spin_started.elapsed() >= spin_deadline - Duration::from_millis(20));
    // And the memory tenant is unaffected afterwards.
    assert_eq!(get(&s, "/doc").await.len(), 64 * 1024);
}

/// Before: 200 000 `log` calls in one file-info wrote 68 MB to the
/// server's log. Now a tenant's instances share a rate (100 lines/s and
/// 64 KiB/s by default, two seconds' burst); the rest is dropped and
/// counted, and another tenant's lines still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_is_cut_to_the_tenants_rate_and_another_tenant_still_logs() {
    let rt = runtime();
    let plugin = hostile(&rt, Duration::from_secs(10)).await;
    let eve = session(&plugin, "eve").await;
    for path in ["/stderr-flood", "/log-flood"] {
        let (written, dropped) = (stat(&rt.stats().log_lines), stat(&rt.stats().log_lines_dropped));
        let started = Instant::now();
        let info = bounded(eve.file_info(path)).await.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(info.size, 0);
        let took = started.elapsed().as_secs_f64();
        let written = stat(&rt.stats().log_lines) - written;
        let dropped = stat(&rt.stats().log_lines_dropped) - dropped;
        // 340-byte lines: the byte rate bounds them first.
        let bytes_allowed = (128 << 10) as f64 + took * (64 << 10) as f64;
        assert!(written as f64 * 340.0 <= bytes_allowed + 340.0, "{path}: {written} lines in {took:.2} s");
        assert!(written >= 1, "{path}: the first lines pass");
        assert_eq!(written + dropped, 200_000, "{path}: every line is written or counted as dropped");
    }
    let bob = bounded(plugin.open_session(ctx("bob", "good-corp"))).await.expect("bob's session");
    let written = stat(&rt.stats().log_lines);
    bounded(bob.file_info("/log-one")).await.expect("bob logs a line");
    assert_eq!(stat(&rt.stats().log_lines) - written, 1, "another tenant's line passes");
}

/// Before: the log rate lived on the tenant's live stores; a trap dropped
/// the store, the next call made a fresh one, and the tenant got a full
/// two-second burst again (about 330 lines per flood-and-trap, not 100/s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_does_not_refill_the_tenants_log_rate() {
    let rt = runtime();
    let plugin = hostile(&rt, Duration::from_secs(10)).await;
    let eve = session(&plugin, "eve").await;
    let written = stat(&rt.stats().log_lines);
    let poisoned = stat(&rt.stats().poisoned);
    let started = Instant::now();
    for _ in 0..5 {
        bounded(eve.file_info("/log-flood")).await.expect("flood");
        let _ = bounded(eve.file_info("/panic")).await;
    }
    assert_eq!(stat(&rt.stats().poisoned) - poisoned, 5, "each panic dropped the instance");
    let took = started.elapsed().as_secs_f64();
    let written = stat(&rt.stats().log_lines) - written;
    // 100 lines a second, 200 of burst (the line rate binds before the byte rate here).
    let lines_allowed = 200.0 + took * 100.0;
    assert!(written as f64 <= lines_allowed + 1.0, "{written} lines in {took:.2} s, {lines_allowed:.0} allowed");
}

/// A tenant whose instances keep failing has its calls refused at once for
/// a cool-down (no fresh instance and `init` per call), logged once per
/// trip; another tenant of the same plugin is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_failing_repeatedly_is_refused_for_a_cool_down_and_others_are_not() {
    let rt = runtime();
    let breaker = wasftp::plugin::BreakerLimits { failures: 3, window: Duration::from_secs(60), cooldown: Duration::from_secs(1) };
    let settings = PluginSettings { breaker, ..settings(Duration::from_secs(5), &[]) };
    let plugin = bounded(rt.load("hostile", &hostile_bytes(), settings)).await.expect("loading the hostile plugin");
    let failing = bounded(plugin.open_session(ctx("mallory", "failing"))).await.unwrap();
    let other = bounded(plugin.open_session(ctx("olive", "other"))).await.unwrap();
    for _ in 0..3 {
        assert_plugin_failed(&bounded(failing.file_info("/panic")).await, "a panic");
    }
    assert_eq!(stat(&rt.stats().breaker_trips), 1, "the third failure opened it");
    let created = stat(&rt.stats().instances_created);
    let started = Instant::now();
    match bounded(failing.file_info("/ok")).await {
        Err(StorageError::Io(message)) => assert!(message.contains("failed 3 times") && message.contains("refused"), "{message}"),
        other => panic!("a call while the breaker is open: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(200), "answered at once ({:?})", started.elapsed());
    assert_eq!(stat(&rt.stats().instances_created), created, "no instance built for a refused call");
    assert!(stat(&rt.stats().breaker_refusals) >= 1);
    // Another tenant of the same plugin goes on.
    assert_ok(&other).await;
    // After the cool-down the tenant is served again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_ok(&failing).await;
}
