//! A plugin swapped 50 times while ten sessions keep uploading and
//! downloading (five paramiko sessions that never reconnect, five OpenSSH
//! `sftp` clients that reconnect for every batch), every file checked by
//! md5: no operation fails, no file is corrupted, every session opened
//! after a swap is on the new version, and broken builds (not a component,
//! one trapping in `init`, written to the plugin file or uploaded) never
//! replace the working one.

mod client_support;
mod s3_support;
mod server_support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use s3_support::S3Bucket;
use server_support::*;
use wasftp::admin::client::AdminClient;
use wasftp::config::PluginConfig;

const TOKEN: &str = "test-admin-token-0123456789";
const SWAPS: usize = 50;
const PARAMIKO_SESSIONS: usize = 5;
const OPENSSH_SESSIONS: usize = 5;

async fn poll<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One OpenSSH client at a time, each a new session: put three files, get
/// them back, compare; until `stop`. Returns the files checked.
async fn openssh_worker(server: Arc<TestServer>, user: String, stop: Arc<AtomicBool>, failures: Arc<AtomicUsize>) -> usize {
    let work = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let mut round = 0u64;
    while !stop.load(Ordering::SeqCst) || round < 2 {
        round += 1;
        let mut batch = format!("-mkdir /{user}\n");
        let mut files = Vec::new();
        for (i, size) in [0usize, 50_000, 1_200_000].into_iter().enumerate() {
            let seed = round * 10 + i as u64;
            let local = work.path().join(format!("up-{round}-{i}"));
            std::fs::write(&local, pattern(size, seed)).unwrap();
            batch.push_str(&format!("put {} /{user}/r{round}-{i}\n", local.display()));
            let back = work.path().join(format!("down-{round}-{i}"));
            batch.push_str(&format!("get /{user}/r{round}-{i} {}\n", back.display()));
            files.push((local, back));
        }
        batch.push_str(&format!("rm /{user}/r{round}-0\n"));
        let out = server.sftp_batch(&user, &batch, work.path(), Duration::from_secs(120)).await;
        if !out.success() {
            eprintln!("{user} round {round}: sftp failed: {out:?}");
            failures.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        for (local, back) in files {
            if md5_file(&local) != md5_file(&back) {
                eprintln!("{user} round {round}: {} came back different", local.display());
                failures.fetch_add(1, Ordering::SeqCst);
            }
            checked += 1;
            let _ = std::fs::remove_file(local);
            let _ = std::fs::remove_file(back);
        }
    }
    checked
}

/// Swaps the plugin `SWAPS` times between two builds under load; returns
/// the time from each file change to the first session on the new version,
/// and the metrics at the end.
async fn swap_under_load(plugin: PluginConfig, build: Vec<u8>, hands_over: bool) -> (Vec<Duration>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugin.wasm");
    std::fs::write(&file, &build).unwrap();
    let builds = [build.clone(), rebuilt(&build, "second")];
    let hashes = builds.iter().map(|b| wasftp::live::content_hash(b)).collect::<Vec<_>>();
    let workers: Vec<String> = (0..PARAMIKO_SESSIONS)
        .map(|i| format!("paramiko{i}"))
        .chain((0..OPENSSH_SESSIONS).map(|i| format!("openssh{i}")))
        .collect();
    let users = workers
        .iter()
        .enumerate()
        .map(|(i, name)| UserSpec::new(name).tenant(if i % 2 == 0 { "acme" } else { "globex" }))
        .chain([UserSpec::new("probe").tenant("acme")]);
    let file_source = file.to_str().unwrap().to_string();
    let server = Arc::new(
        start_with(users, move |config| {
            config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
            config.admin.token = Some(TOKEN.into());
            let mut plugin = plugin;
            plugin.source = file_source;
            config.plugins.insert("swapped".into(), plugin);
            for user in &mut config.users {
                user.plugin = "swapped".into();
            }
        })
        .await,
    );
    let admin =
        AdminClient::new(&format!("http://{}", server.server().admin_addr().unwrap()), TOKEN).expect("an admin client");

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let stop_file = dir.path().join("stop");
    let mut paramiko = Vec::new();
    for name in workers.iter().filter(|w| w.starts_with("paramiko")) {
        let mut cmd = tokio::process::Command::new("python3");
        cmd.arg("-u").arg(client_support::scripts_dir().join("swap_worker.py")).arg(name).arg(&stop_file);
        cmd.env("WASFTP_PORT", server.port().to_string())
            .env("WASFTP_USER", name)
            .env("WASFTP_PASSWORD", &server.user(name).password)
            .env("PYTHONPATH", client_support::scripts_dir());
        paramiko.push((name.clone(), tokio::spawn(run(cmd, Duration::from_secs(900)))));
    }
    let openssh: Vec<_> = workers
        .iter()
        .filter(|w| w.starts_with("openssh"))
        .map(|name| tokio::spawn(openssh_worker(server.clone(), name.clone(), stop.clone(), failures.clone())))
        .collect();
    // Every paramiko session is in before the first swap: they stay on version 1.
    poll("the paramiko sessions log in", Duration::from_secs(60), async || {
        let sessions = admin.sessions().await.ok()?;
        (sessions.iter().filter(|s| s.user.starts_with("paramiko")).count() == PARAMIKO_SESSIONS).then_some(())
    })
    .await;

    let mut swap_times = Vec::new();
    for swap in 1..=SWAPS {
        if swap % 10 == 5 {
            refuse_broken_builds(&admin, &file, &hashes[(swap - 1) % 2], swap as u64).await;
        }
        let next = swap % 2;
        let started = Instant::now();
        replace_file(&file, &builds[next]);
        poll("the swap", Duration::from_secs(60), async || {
            let plugin = admin.plugins().await.ok()?.into_iter().next()?;
            (plugin.current.hash == hashes[next]).then_some(())
        })
        .await;
        let probe = server.sftp_password("probe").await;
        let took = started.elapsed();
        if hands_over {
            // Every tenant with files moved with them; none stayed behind.
            // (The report is written once the hand-over is done, after the
            // new version became current.)
            let report = poll("the swap's report", Duration::from_secs(60), async || {
                let report = admin.plugins().await.ok()?.remove(0).last_reload?;
                (report.number == 1 + swap as u64).then_some(report)
            })
            .await;
            assert!(report.message.contains("tenants moved with their state") && !report.message.contains("stays on"), "swap {swap}: {report:?}");
        }
        let on = admin.sessions().await.unwrap().into_iter().find(|s| s.user == "probe").expect("the probe session");
        let current = admin.plugins().await.unwrap().remove(0).current;
        assert_eq!(on.plugin_versions, vec![current.number], "a new session is on the new version (swap {swap})");
        assert_eq!(current.number, 1 + swap as u64, "refusals take no version number (swap {swap})");
        probe.disconnect().await;
        swap_times.push(took);
    }

    stop.store(true, Ordering::SeqCst);
    std::fs::write(&stop_file, b"").unwrap();
    let mut operations = 0;
    for (name, worker) in paramiko {
        let out = worker.await.unwrap();
        assert!(out.success(), "paramiko worker {name} failed: {out:?}");
        let ops: usize = out.stdout.trim().strip_prefix("ok ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{out:?}"));
        operations += ops;
    }
    for worker in openssh {
        operations += worker.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0, "no operation failed and no file came back different");
    let plugin = admin.plugins().await.unwrap().remove(0);
    assert_eq!(plugin.current.traps, 0);
    println!("{operations} operations checked across {SWAPS} swaps; plugin now {:?}", plugin.current);
    let metrics = admin.metrics().await.expect("scraping the metrics");
    Arc::into_inner(server).expect("the workers are done").shutdown().await;
    (swap_times, metrics)
}

/// Not a component and a build trapping in `init`, written to the plugin's
/// file and uploaded: each refused, the working version stays.
async fn refuse_broken_builds(admin: &AdminClient, file: &Path, working: &str, tag: u64) {
    let trapping = std::fs::read(env!("WASFTP_HOSTILE_TRAP_IN_INIT_PLUGIN")).unwrap();
    let broken: [(&str, Vec<u8>); 2] = [("garbage", format!("not a component {tag}").into_bytes()), ("trap-in-init", trapping)];
    for (what, bytes) in broken {
        let refused = admin.upload("swapped", bytes.clone()).await.expect_err(what);
        assert!(refused.to_string().contains("422"), "{what}: {refused}");
        let before = admin.plugins().await.unwrap().remove(0).last_reload.map_or(0, |r| r.attempt);
        replace_file(file, &bytes);
        let last = poll(&format!("{what} written to the file"), Duration::from_secs(60), async || {
            let last = admin.plugins().await.ok()?.remove(0).last_reload?;
            (last.attempt > before && last.trigger == "file").then_some(last)
        })
        .await;
        assert_eq!(last.result, "refused", "{what}: {last:?}");
        let plugin = admin.plugins().await.unwrap().remove(0);
        assert_eq!(plugin.current.hash, working, "{what} never replaces the working build");
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_swapped_under_load_loses_nothing() {
    let bucket = S3Bucket::start().await;
    let build = wasftp::plugin::bundled::get("s3").expect("the bundled s3 plugin").to_vec();
    let (times, metrics) = swap_under_load(bucket.plugin_config(), build, false).await;
    // The S3 requests, by method and status, counted by the host's outbound layer.
    let puts = metrics
        .lines()
        .find(|l| l.starts_with("wasftp_plugin_http_requests_total{") && l.contains(r#"method="PUT""#) && l.contains(r#"status="200""#))
        .unwrap_or_else(|| panic!("no PUT 200 in the metrics:\n{metrics}"));
    assert!(puts.rsplit(' ').next().unwrap().parse::<f64>().unwrap() > 100.0, "{puts}");
    println!("s3: file change to the first session on the new version: median {:?} of {}", median(times.clone()), times.len());
    assert_eq!(bucket.multipart_uploads().await, 0, "no upload was left half-done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_swapped_under_load_keeps_every_tenants_files() {
    let build = wasftp::plugin::bundled::get("memory").expect("the bundled memory plugin").to_vec();
    let (times, _) = swap_under_load(PluginConfig::bundled_memory(), build, true).await;
    println!("memory: file change to the first session on the new version: median {:?} of {}", median(times.clone()), times.len());
}
