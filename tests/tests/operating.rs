//! Operating a running server: the admin API (its token, health, plugins,
//! sessions), reloads that swap only an admitted build, rollback, drain
//! deadlines, SIGHUP's configuration reload, and the Prometheus metrics
//! after a known workload.

mod server_support;

use std::collections::BTreeMap;
use std::time::Duration;

use server_support::*;
use wasftp::admin::client::{AdminClient, AdminCommand, Method};
use wasftp::config::Config;

const TOKEN: &str = "test-admin-token-0123456789";

fn with_admin(config: &mut Config) {
    config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    config.admin.token = Some(TOKEN.into());
}

fn admin_with(server: &TestServer, token: &str) -> AdminClient {
    let addr = server.server().admin_addr().expect("the admin API listens");
    AdminClient::new(&format!("http://{addr}"), token).expect("an admin client")
}

fn admin(server: &TestServer) -> AdminClient {
    admin_with(server, TOKEN)
}


fn memory_bytes() -> Vec<u8> {
    wasftp::plugin::bundled::get("memory").expect("the bundled memory plugin").to_vec()
}

/// The memory plugin loaded from `dir/memory.wasm` (watched).
fn memory_from_file(config: &mut Config, dir: &std::path::Path, drain_secs: u64) -> std::path::PathBuf {
    let path = dir.join("memory.wasm");
    std::fs::write(&path, memory_bytes()).expect("writing the plugin file");
    let plugin = config.plugins.get_mut("memory").unwrap();
    plugin.source = path.to_str().unwrap().into();
    plugin.drain_secs = drain_secs;
    path
}

async fn session_of(admin: &AdminClient, user: &str) -> wasftp::ssh::sessions::SessionInfo {
    let sessions = admin.sessions().await.expect("listing sessions");
    let mine: Vec<_> = sessions.into_iter().filter(|s| s.user == user).collect();
    assert_eq!(mine.len(), 1, "one session of {user}: {mine:?}");
    mine.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_wants_its_token_and_shows_plugins_and_sessions() {
    let server = start_with([UserSpec::new("alice")], with_admin).await;
    let admin = admin(&server);

    // Health needs no token; everything else does.
    for token in ["wrong-token-of-the-same-length", ""] {
        let outsider = admin_with(&server, token);
        assert_eq!(outsider.status(Method::GET, "/healthz").await.unwrap(), 200);
        assert_eq!(outsider.status(Method::GET, "/readyz").await.unwrap(), 200);
        for (method, path) in [
            (Method::GET, "/plugins"),
            (Method::GET, "/sessions"),
            (Method::GET, "/metrics"),
            (Method::POST, "/plugins/memory/reload"),
            (Method::POST, "/plugins/memory/rollback"),
            (Method::PUT, "/plugins/memory"),
            (Method::DELETE, "/sessions/1"),
        ] {
            assert_eq!(outsider.status(method.clone(), path).await.unwrap(), 401, "{method} {path} with {token:?}");
        }
    }

    let plugins = admin.plugins().await.expect("listing plugins");
    assert_eq!(plugins.len(), 1, "{plugins:?}");
    let memory = &plugins[0];
    assert_eq!((memory.name.as_str(), memory.current.number, memory.current.backend.as_str()), ("memory", 1, "memory"));
    assert_eq!(memory.current.hash, wasftp::live::content_hash(&memory_bytes()));
    assert!(!memory.rollback_available && memory.draining.is_empty());

    let client = server.sftp("alice").await;
    let data = pattern(300_000, 1);
    client.put("/a", &data).await;
    assert_eq!(client.get("/a").await, data);
    let alice = session_of(&admin, "alice").await;
    assert_eq!((alice.tenant.as_str(), alice.plugin.as_str()), ("alice", "memory"));
    assert_eq!((alice.bytes_in, alice.bytes_out), (300_000, 300_000), "{alice:?}");
    assert_eq!(alice.plugin_versions, vec![1]);
    assert_eq!(admin.plugins().await.unwrap()[0].current.sessions, 1);
    let table = admin.run(AdminCommand::Sessions).await.expect("the sessions table");
    assert!(table.contains("alice") && table.contains("memory#1"), "{table}");
    let table = admin.run(AdminCommand::Plugins).await.expect("the plugins table");
    assert!(table.lines().nth(1).is_some_and(|line| line.starts_with("memory")), "{table}");

    // Closing it ends the connection; a second close finds nothing.
    admin.run(AdminCommand::Close(alice.id)).await.expect("closing the session");
    assert!(
        wait_until(Duration::from_secs(10), || server.active_sessions() == 0).await,
        "the closed connection is gone"
    );
    assert!(client.list("/").await.is_err(), "the closed session serves nothing");
    assert!(admin.sessions().await.unwrap().is_empty());
    let again = admin.run(AdminCommand::Close(alice.id)).await.expect_err("closing it again");
    assert!(again.to_string().contains("404"), "{again}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_only_an_admitted_build_and_rollback_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = None;
    let server = start_with([UserSpec::new("alice"), UserSpec::new("bob")], |config| {
        with_admin(config);
        file = Some(memory_from_file(config, dir.path(), 0));
    })
    .await;
    let file = file.unwrap();
    let admin = admin(&server);
    let first = wasftp::live::content_hash(&memory_bytes());

    let old_session = server.sftp("alice").await;
    old_session.put("/kept", b"on the first version").await;

    // Refused builds change nothing: not a component, one trapping in init.
    let refused = admin.upload("memory", b"not a component".to_vec()).await.expect_err("a file that is no component");
    assert!(refused.to_string().contains("422"), "{refused}");
    let trapping = std::fs::read(env!("WASFTP_HOSTILE_TRAP_IN_INIT_PLUGIN")).unwrap();
    let refused = admin.upload("memory", trapping).await.expect_err("a build trapping in init");
    assert!(refused.to_string().contains("instantiate: trapped"), "the refusal says why: {refused}");
    let memory = &admin.plugins().await.unwrap()[0];
    assert_eq!((memory.current.number, memory.current.hash.as_str()), (1, first.as_str()));
    let last = memory.last_reload.as_ref().unwrap();
    assert_eq!((last.result.as_str(), last.trigger.as_str()), ("refused", "upload"));

    // The same file again is no new version.
    assert_eq!(admin.reload("memory").await.expect("reloading").result, "unchanged");

    // A new build on disk is swapped in; open sessions stay where they were.
    let second_build = rebuilt(&memory_bytes(), "second");
    replace_file(&file, &second_build);
    let mut swapped = false;
    for _ in 0..200 {
        if admin.plugins().await.unwrap()[0].current.number == 2 {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(swapped, "the file change was picked up: {:?}", admin.plugins().await.unwrap());
    let memory = &admin.plugins().await.unwrap()[0];
    assert_eq!(memory.current.hash, wasftp::live::content_hash(&second_build));
    assert_eq!(memory.last_reload.as_ref().unwrap().trigger, "file");
    assert!(memory.rollback_available);
    // Memory hands its tenants over: the open session went with its tenant.
    assert!(memory.draining.is_empty(), "{memory:?}");
    assert!(memory.last_reload.as_ref().unwrap().message.contains("1 tenants moved with their state"), "{memory:?}");
    let new_session = server.sftp("bob").await;
    assert_eq!(session_of(&admin, "bob").await.plugin_versions, vec![2]);
    assert_eq!(session_of(&admin, "alice").await.plugin_versions, vec![2]);
    assert_eq!(old_session.get("/kept").await, b"on the first version", "the old session goes on with its files");
    new_session.put("/b", b"on the second version").await;

    // Rollback loads the first build again, as version 3.
    let report = admin.rollback("memory").await.expect("rolling back");
    assert_eq!((report.result.as_str(), report.number, report.hash.as_str()), ("swapped", 3, first.as_str()));
    assert_eq!(admin.plugins().await.unwrap()[0].current.number, 3);

    // A version is gone once its last session ends.
    old_session.disconnect().await;
    new_session.disconnect().await;
    let mut drained = false;
    for _ in 0..200 {
        if admin.plugins().await.unwrap()[0].draining.is_empty() {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(drained, "{:?}", admin.plugins().await.unwrap());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_past_the_drain_deadline_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with([UserSpec::new("alice")], |config| {
        with_admin(config);
        memory_from_file(config, dir.path(), 1);
        config.plugins.get_mut("memory").unwrap().handover_wait_secs = 1;
    })
    .await;
    let admin = admin(&server);
    let old_session = server.sftp("alice").await;
    old_session.write_without_close("/unfinished", &pattern(100_000, 2)).await.expect("writing without a close");
    // The open upload keeps alice on version 1; her session is closed at
    // the drain deadline (the upload aborted).
    let report = admin.upload("memory", rebuilt(&memory_bytes(), "drain")).await.expect("swapping");
    assert_eq!(report.result, "swapped");
    assert!(report.message.contains("tenant alice stays on version 1"), "{report:?}");
    assert!(
        wait_until(Duration::from_secs(15), || server.active_sessions() == 0).await,
        "the session on the replaced version was closed at its deadline"
    );
    assert!(old_session.list("/").await.is_err());
    assert!(admin.plugins().await.unwrap()[0].draining.is_empty());
    // A new session is on the new version (alice's files where she stayed).
    let client = server.sftp("alice").await;
    assert_eq!(session_of(&admin, "alice").await.plugin_versions, vec![2]);
    assert!(client.list("/").await.unwrap().is_empty(), "the unfinished upload was aborted, not committed");
    client.disconnect().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_configuration_takes_effect_and_a_broken_one_changes_nothing() {
    let server = start_with([UserSpec::new("alice")], with_admin).await;
    let running = server.server().config().await;
    let mut carol = running.users[0].clone();
    carol.name = "carol".into();
    carol.password_hash = Some(wasftp::auth::hash_password("carol-password").unwrap());
    carol.tenant = Some("carol".into());

    // A plugin that is not admitted: nothing changes, carol is not let in.
    let mut broken = running.clone();
    let mut plugin = broken.plugins["memory"].clone();
    plugin.source = "/nonexistent/plugin.wasm".into();
    broken.plugins.insert("broken".into(), plugin);
    let mut on_broken = carol.clone();
    on_broken.plugin = "broken".into();
    broken.users.push(on_broken);
    let refused = server.server().reload_config(broken).await.expect_err("a plugin that cannot load");
    assert!(refused.to_string().contains("nothing changed"), "{refused:#}");
    assert!(!server.password_accepted("carol", "carol-password").await);
    assert!(server.password_accepted("alice", &server.user("alice").password).await);

    // Carol added, and a limit (which waits for a restart).
    let mut next = running.clone();
    next.users.push(carol);
    next.limits.max_sessions += 1;
    let changes = server.server().reload_config(next).await.expect("a good configuration");
    assert!(changes.iter().any(|c| c.starts_with("limits") && c.contains("restart")), "{changes:?}");
    assert!(changes.iter().any(|c| c.starts_with("plugin memory: unchanged")), "{changes:?}");
    assert!(server.password_accepted("carol", "carol-password").await);
    assert_eq!(admin(&server).plugins().await.unwrap()[0].current.number, 1);

    // Alice removed: she can no longer log in.
    let mut without_alice = server.server().config().await;
    without_alice.users.retain(|u| u.name != "alice");
    server.server().reload_config(without_alice).await.expect("a configuration without alice");
    assert!(!server.password_accepted("alice", &server.user("alice").password).await);
    server.shutdown().await;
}

/// `name{labels} value` lines of a Prometheus scrape, labels sorted.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let key = match series.split_once('{') {
            Some((name, labels)) => {
                let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                labels.sort();
                format!("{name}{{{}}}", labels.join(","))
            }
            None => series.to_string(),
        };
        out.insert(key, value.parse().unwrap_or(f64::NAN));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_count_a_known_workload() {
    // A plugin name of its own: the recorder is the process's, shared with
    // the other tests of this binary.
    let server = start_with([UserSpec::new("mia")], |config| {
        with_admin(config);
        let memory = config.plugins["memory"].clone();
        config.plugins.insert("metered".into(), memory);
        config.users[0].plugin = "metered".into();
    })
    .await;
    let admin = admin(&server);
    assert!(!server.password_accepted("mia", "not her password").await);
    let client = server.sftp("mia").await;
    for (i, size) in [1000usize, 2000, 3000].into_iter().enumerate() {
        client.put(&format!("/f{i}"), &pattern(size, i as u64)).await;
    }
    assert_eq!(client.get("/f0").await.len(), 1000);
    assert_eq!(client.get("/f1").await.len(), 2000);
    let refused = admin.upload("metered", b"junk".to_vec()).await;
    assert!(refused.is_err());

    let scrape = samples(&admin.metrics().await.expect("scraping"));
    let value = |key: &str| scrape.get(key).copied().unwrap_or_else(|| panic!("no {key} in the scrape: {scrape:#?}"));
    assert_eq!(value(r#"wasftp_sftp_requests_total{op="open",plugin="metered",status="Ok"}"#), 5.0);
    assert_eq!(value(r#"wasftp_sftp_requests_total{op="write",plugin="metered",status="Ok"}"#), 3.0);
    assert_eq!(value(r#"wasftp_sftp_requests_total{op="close",plugin="metered",status="Ok"}"#), 5.0);
    // Each get reads its bytes, then once more to meet EOF.
    assert_eq!(value(r#"wasftp_sftp_requests_total{op="read",plugin="metered",status="Ok"}"#), 2.0);
    assert_eq!(value(r#"wasftp_sftp_requests_total{op="read",plugin="metered",status="Eof"}"#), 2.0);
    assert_eq!(value(r#"wasftp_sftp_request_seconds_count{op="open",plugin="metered"}"#), 5.0);
    assert_eq!(value(r#"wasftp_sftp_bytes_total{direction="in",plugin="metered"}"#), 6000.0);
    assert_eq!(value(r#"wasftp_sftp_bytes_total{direction="out",plugin="metered"}"#), 3000.0);
    assert_eq!(value(r#"wasftp_plugin_reloads_total{plugin="metered",result="refused"}"#), 1.0);
    assert_eq!(value(r#"wasftp_plugin_version{plugin="metered"}"#), 1.0);
    assert_eq!(value(r#"wasftp_plugin_sessions{plugin="metered",version="current"}"#), 1.0);
    assert_eq!(value(r#"wasftp_plugin_tenants{plugin="metered"}"#), 1.0);
    assert!(value(r#"wasftp_failed_logins_total{method="password"}"#) >= 1.0);
    // Plugin calls by kind: at least the session's open, the writes and commits.
    assert!(value(r#"wasftp_plugin_call_seconds_count{kind="data",plugin="metered"}"#) >= 3.0);
    assert!(value(r#"wasftp_plugin_call_seconds_count{kind="commit",plugin="metered"}"#) >= 3.0);
    assert!(value(r#"wasftp_plugin_queue_wait_seconds_count{plugin="metered"}"#) >= 10.0);
    assert_eq!(value(r#"wasftp_plugin_breakers_open{plugin="metered"}"#), 0.0);
    assert!(value("wasftp_connections_total") >= 2.0);
    assert!(value("wasftp_guest_memory_bytes") > 0.0);
    assert!(value(r#"wasftp_budget_limit{budget="open_files"}"#) > 0.0);
    client.disconnect().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_api_off_loopback_needs_an_explicit_opt_in() {
    let mut config = Config::from_toml("").unwrap();
    config.admin.listen = Some("0.0.0.0:0".parse().unwrap());
    let refused = config.validate().expect_err("a non-loopback admin listener");
    assert!(refused.to_string().contains("allow_remote"), "{refused}");
    config.admin.allow_remote = true;
    config.validate().expect("opted in");
    // A token too short to be safe is refused at start.
    let short = wasftp::admin::token(Some("short")).expect_err("a short token");
    assert!(short.to_string().contains("at least 16"), "{short}");
}

async fn wait_for_version(admin: &AdminClient, number: u64) -> wasftp::live::PluginSummary {
    for _ in 0..600 {
        let plugin = admin.plugins().await.unwrap().remove(0);
        if plugin.current.number == number && plugin.last_reload.as_ref().is_some_and(|r| r.number == number) {
            return plugin;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("version {number} never became current: {:?}", admin.plugins().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_hands_every_tenants_files_over_and_waits_for_open_uploads() {
    let server = start_with([UserSpec::new("alice"), UserSpec::new("bob"), UserSpec::new("carol")], with_admin).await;
    let admin = admin(&server);
    let alice = server.sftp("alice").await;
    let bob = server.sftp("bob").await;
    let kept = pattern(2_000_000, 3);
    alice.put("/kept", &kept).await;
    bob.put("/bobs", b"bob's file").await;
    let old_info = bounded("stat", alice.stat("/kept")).await.unwrap();
    // An upload open across the swap: the state moves once it is closed.
    let half = pattern(600_000, 4);
    let handle = alice.write_without_close("/open", &half[..300_000]).await.unwrap();

    let swap = tokio::spawn({
        let admin = admin_with(&server, TOKEN);
        async move { admin.upload("memory", rebuilt(&memory_bytes(), "handover")).await }
    });
    // Version 2 is current once admitted; its hand-over then waits.
    for _ in 0..600 {
        if admin.plugins().await.unwrap()[0].current.number == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!swap.is_finished(), "the swap waits for the open upload");
    // The tenant's other requests go on meanwhile.
    assert_eq!(bounded("stat during the wait", alice.stat("/kept")).await.unwrap().attrs.size, Some(kept.len() as u64));
    for (i, piece) in half[300_000..].chunks(32_768).enumerate() {
        let offset = 300_000 + (i * 32_768) as u64;
        bounded("write", alice.write(handle.as_str(), offset, piece.to_vec())).await.unwrap();
    }
    bounded("close", alice.close(handle)).await.unwrap();
    let report = bounded("the swap", swap).await.unwrap().expect("the swap");
    assert_eq!(report.result, "swapped");
    assert!(report.message.contains("; 2 tenants moved with their state"), "alice and bob: {report:?}");

    // Old sessions go on with their files, on the new version; new ones too.
    assert_eq!(alice.get("/kept").await, kept);
    assert_eq!(alice.get("/open").await, half);
    assert_eq!(session_of(&admin, "alice").await.plugin_versions, vec![2], "the session moved with its tenant");
    let new_bob = server.sftp("bob").await;
    assert_eq!(new_bob.get("/bobs").await, b"bob's file");
    let new_info = bounded("stat", new_bob.stat("/bobs")).await.unwrap();
    assert_eq!(new_info.attrs.size, Some(10));
    assert_eq!(bounded("stat", alice.stat("/kept")).await.unwrap().attrs.mtime, old_info.attrs.mtime, "times are kept");
    let carol = server.sftp("carol").await;
    assert!(carol.list("/").await.unwrap().is_empty(), "a tenant never seen before starts empty");
    assert!(admin.plugins().await.unwrap()[0].draining.is_empty(), "no session is left on the old version");
    for client in [alice, bob, new_bob, carol] {
        client.disconnect().await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_that_fails_leaves_the_tenant_whole_on_the_old_version() {
    let server = start_with([UserSpec::new("alice"), UserSpec::new("dave")], |config| {
        with_admin(config);
        config.plugins.get_mut("memory").unwrap().handover_wait_secs = 1;
    })
    .await;
    let admin = admin(&server);
    let alice = server.sftp("alice").await;
    let big = pattern(3_000_000, 5);
    alice.put("/big", &big).await;
    let dave = server.sftp("dave").await;
    let handle = dave.write_without_close("/never-closed", b"pending").await.unwrap();

    // A new version whose quota cannot hold alice's files, and dave's upload
    // open past the wait: neither tenant moves, and neither loses anything.
    let mut config = server.server().config().await;
    config.plugins.get_mut("memory").unwrap().config.insert("max-bytes".into(), "1000000".into());
    let changes = server.server().reload_config(config).await.expect("the new configuration");
    let change = changes.iter().find(|c| c.starts_with("plugin memory")).unwrap();
    assert!(change.contains("swapped"), "{changes:?}");
    assert!(change.contains("tenant alice stays on version 1") && change.contains("no space"), "{change}");
    assert!(change.contains("tenant dave stays on version 1") && change.contains("uploads stayed open"), "{change}");
    let plugin = admin.plugins().await.unwrap().remove(0);
    assert_eq!(plugin.current.number, 2);

    // A new session of alice runs where her files are.
    let again = server.sftp("alice").await;
    assert_eq!(again.get("/big").await, big);
    bounded("close", dave.close(handle)).await.unwrap();
    assert_eq!(server.sftp("dave").await.get("/never-closed").await, b"pending");
    // The next swap (back to a quota that holds them) moves them.
    let mut config = server.server().config().await;
    config.plugins.get_mut("memory").unwrap().config.remove("max-bytes");
    let changes = server.server().reload_config(config).await.expect("the configuration before");
    assert!(changes.iter().any(|c| c.contains("2 tenants moved with their state")), "{changes:?}");
    let plugin = wait_for_version(&admin, 3).await;
    assert_eq!(plugin.current.number, 3);
    assert_eq!(again.get("/big").await, big);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_that_hangs_or_traps_in_its_import_leaves_the_old_state_whole() {
    let server = start_with([UserSpec::new("alice")], |config| {
        with_admin(config);
        use_slow_plugin(config, &[("handover", "on")]);
        config.plugins.get_mut("slow").unwrap().timeouts.commit_secs = 3;
    })
    .await;
    let alice = server.sftp("alice").await;
    let data = pattern(200_000, 6);
    alice.put("/f", &data).await;
    for broken in ["import-hangs", "import-traps"] {
        let mut config = server.server().config().await;
        config.plugins.get_mut("slow").unwrap().config.insert("break".into(), broken.into());
        let changes = bounded("the swap", server.server().reload_config(config)).await.expect("the new configuration");
        let change = changes.iter().find(|c| c.starts_with("plugin slow")).unwrap();
        assert!(change.contains("tenant alice stays on version") && change.contains("import-state"), "{broken}: {change}");
        assert_eq!(alice.get("/f").await, data, "{broken}: the old session's file is whole");
        let again = server.sftp("alice").await;
        assert_eq!(again.get("/f").await, data, "{broken}: a new session finds it too");
        again.disconnect().await;
    }
    // A working next version takes the state.
    let mut config = server.server().config().await;
    config.plugins.get_mut("slow").unwrap().config.remove("break");
    let changes = server.server().reload_config(config).await.expect("a working version");
    assert!(changes.iter().any(|c| c.contains("; 1 tenants moved with their state")), "{changes:?}");
    assert_eq!(alice.get("/f").await, data);
    alice.disconnect().await;
    server.shutdown().await;
}
