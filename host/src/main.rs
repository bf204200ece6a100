//! The `wasftp` command: a thin CLI over the library.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rand::Rng as _;
use wasftp::config::{Config, UserConfig};
use wasftp::telemetry::{self, LogFormat};

/// wasftp: an SFTP server whose storage backends are sandboxed WebAssembly
/// components (memory, S3, your own), loaded from one WIT contract.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log output format (`RUST_LOG` sets the level, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve SFTP. Without --config: dev mode, the bundled memory plugin and
    /// a user `demo` whose password is printed once (or set by --password).
    Serve {
        /// TOML config file (see the README for every field).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address, overriding the config (default 127.0.0.1:2222).
        #[arg(long, short)]
        listen: Option<SocketAddr>,
        /// Dev mode only: the password of user `demo` instead of a random one.
        #[arg(long)]
        password: Option<String>,
    },
    /// Print the argon2 hash of a password for `password_hash` in the config.
    /// Reads the password from stdin when not given.
    HashPassword {
        password: Option<String>,
    },
    /// Plugin authors' tools: what a plugin file is, and whether it keeps
    /// the contract.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// A running server's admin API: plugin versions, reloads, sessions.
    Admin {
        /// The admin API (`[admin] listen` of the server).
        #[arg(long, env = "WASFTP_ADMIN_URL", default_value = wasftp::admin::client::DEFAULT_URL)]
        url: String,
        /// Its bearer token (better from the environment than on a command line).
        #[arg(long, env = wasftp::admin::TOKEN_ENV, hide_env_values = true)]
        token: String,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Internal: the bounded compiler child the server starts for each
    /// plugin (component on stdin, compiled artefact on stdout).
    #[command(hide = true)]
    CompilePlugin {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Admission as at server start, then every behaviour of the contract
    /// against the plugin: a table of pass, FAIL (with what to fix) and skip.
    /// Exits 1 if a behaviour failed, 2 if the plugin was not admitted.
    Check(PluginArgs),
    /// Admission, then what the plugin is: size, compile time, contract,
    /// capabilities, imports and exports.
    Info(PluginArgs),
    /// Writes a plugin skeleton that builds (`./build`) and passes `check`
    /// as it is: a small read-only tree to replace with your storage.
    New {
        /// Its name (lower-case letters, digits, '-').
        name: String,
        #[arg(long, value_enum)]
        lang: wasftp::plugin_new::Language,
        /// Where to write it (default: ./NAME); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust only: wasftp's sdk/ directory, the skeleton's dependency
        /// (default: the one beside this binary's sources).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Each plugin's current version, those draining, the last reload.
    Plugins,
    /// Loads the plugin's configured file again; swaps if it is admitted.
    Reload { name: String },
    /// Goes back to the version before the current one.
    Rollback { name: String },
    /// Sends a component to replace the plugin, admitted like any other.
    Upload { name: String, file: PathBuf },
    /// The logged-in connections.
    Sessions,
    /// Closes a connection (its open uploads are aborted).
    Close { id: u64 },
}

#[derive(clap::Args)]
struct PluginArgs {
    /// The component (.wasm), or bundled:NAME; with --server-config, the
    /// NAME of a [plugins.NAME] table.
    file: PathBuf,
    /// A server configuration: check the plugin as it configures it
    /// (source, config, grants and limits), not a file with flags.
    #[arg(long, value_name = "CONFIG.toml", conflicts_with_all = ["config", "http_allow", "preopen"])]
    server_config: Option<PathBuf>,
    /// KEY=VALUE for the plugin's init (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// An origin it may reach, as in http_allow (repeatable).
    #[arg(long = "http-allow", value_name = "ORIGIN")]
    http_allow: Vec<String>,
    /// A directory it sees as `/` (read-only unless --writable).
    #[arg(long)]
    preopen: Option<PathBuf>,
    /// The preopened directory is writable.
    #[arg(long, requires = "preopen")]
    writable: bool,
    /// The user the check's session is for (default wasftp-check).
    #[arg(long, default_value = "wasftp-check")]
    user: String,
    /// Its tenant (default: the user).
    #[arg(long)]
    tenant: Option<String>,
}

impl PluginArgs {
    fn file(&self) -> anyhow::Result<wasftp::plugin_tool::PluginFile> {
        Ok(wasftp::plugin_tool::PluginFile {
            path: self.file.clone(),
            config: self.config.iter().map(|c| wasftp::plugin_tool::config_pair(c)).collect::<anyhow::Result<_>>()?,
            http_allow: self.http_allow.clone(),
            preopen: self.preopen.clone().map(|dir| (dir, self.writable)),
            user: self.user.clone(),
            tenant: self.tenant.clone().unwrap_or_else(|| self.user.clone()),
            server_config: self.server_config.clone(),
        })
    }
}

/// A plugin `plugin check` could not load: its own exit status.
#[derive(Debug)]
struct NotAdmitted(anyhow::Error);

impl std::fmt::Display for NotAdmitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for NotAdmitted {}

/// The subcommand the server runs itself as to compile a plugin.
const COMPILE_SUBCOMMAND: &str = "compile-plugin";

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::CompilePlugin { args } = &cli.command {
        return wasftp::plugin::compile_child_main(args);
    }
    telemetry::init(cli.log_format);
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            // `plugin check`: 2 for a plugin that never got to the check.
            if error.downcast_ref::<NotAdmitted>().is_some() { std::process::ExitCode::from(2) } else { std::process::ExitCode::FAILURE }
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::HashPassword { password } => {
            let password = match password {
                Some(p) => p,
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_to_string(&mut line).context("reading the password from stdin")?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            anyhow::ensure!(!password.is_empty(), "the password is empty");
            println!("{}", wasftp::auth::hash_password(&password)?);
            Ok(())
        }
        Command::CompilePlugin { .. } => unreachable!("handled before logging starts"),
        Command::Plugin { command: PluginCommand::New { name, lang, dir, sdk } } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            for file in wasftp::plugin_new::write(lang, &name, &dir, sdk.as_deref())? {
                println!("wrote {}", file.display());
            }
            println!("next: {}/build {name}.wasm && wasftp plugin check {name}.wasm", dir.display());
            Ok(())
        }
        Command::Plugin { command } => {
            let runtime = tokio::runtime::Runtime::new()?;
            let compiler = wasftp::plugin::Compiler::this_executable(COMPILE_SUBCOMMAND)?;
            match command {
                PluginCommand::Info(args) => {
                    print!("{}", runtime.block_on(wasftp::plugin_tool::info(&args.file()?, compiler))?);
                    Ok(())
                }
                PluginCommand::Check(args) => {
                    let checked = runtime.block_on(wasftp::plugin_tool::check(&args.file()?, compiler));
                    let (table, passed) = checked.map_err(|e| anyhow::Error::from(NotAdmitted(e)))?;
                    print!("{table}");
                    anyhow::ensure!(passed, "the plugin does not keep the contract (see FAIL above)");
                    Ok(())
                }
                PluginCommand::New { .. } => unreachable!("handled above"),
            }
        }
        Command::Admin { url, token, command } => {
            use wasftp::admin::client::{AdminClient, AdminCommand as Call};
            let call = match command {
                AdminCommand::Plugins => Call::Plugins,
                AdminCommand::Reload { name } => Call::Reload(name),
                AdminCommand::Rollback { name } => Call::Rollback(name),
                AdminCommand::Upload { name, file } => Call::Upload(name, file),
                AdminCommand::Sessions => Call::Sessions,
                AdminCommand::Close { id } => Call::Close(id),
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let client = AdminClient::new(&url, &token)?;
            print!("{}", runtime.block_on(client.run(call))?);
            Ok(())
        }
        Command::Serve { config, listen, password } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(serve(config, listen, password))
        }
    }
}

/// Raises the soft limit on file descriptors to the hard one (the soft one
/// is often 1024, the hard one far more), as servers holding many files do:
/// open files (`limits.max_open_files`) and connections take descriptors.
fn raise_descriptor_limit(limits: &wasftp::config::Limits) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.maximum != limit.current {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!("raising the file descriptor limit failed: {e}");
        }
    }
    // An open file of a local folder holds a descriptor, a connection one.
    let wanted = (limits.max_open_files as u64).saturating_add(limits.max_sessions as u64);
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    if wanted > soft {
        tracing::warn!(
            "limits.max_open_files + max_sessions = {wanted} descriptors, more than this process may open ({soft}): \
             lower them or raise the limit (ulimit -n, systemd LimitNOFILE=)"
        );
    }
}

async fn serve(config_path: Option<PathBuf>, listen: Option<SocketAddr>, password: Option<String>) -> anyhow::Result<()> {
    let mut config = match &config_path {
        Some(path) => Config::from_file(path)?,
        None => Config::from_toml("")?,
    };
    if let Some(listen) = listen {
        config.listen = listen;
    }
    let dev_password = match (&config_path, password) {
        (None, password) => {
            let password = password.unwrap_or_else(random_password);
            config.users.push(UserConfig {
                name: "demo".into(),
                password_hash: Some(wasftp::auth::hash_password(&password)?),
                authorized_keys: Vec::new(),
                authorized_keys_file: None,
                home: "/".into(),
                plugin: "memory".into(),
                tenant: None,
                attributes: Default::default(),
                uid: 1000,
                gid: 1000,
            });
            Some(password)
        }
        (Some(_), Some(_)) => anyhow::bail!("--password is for dev mode (no --config); set password_hash in the config"),
        (Some(_), None) => None,
    };

    raise_descriptor_limit(&config.limits);
    let engine = wasftp::plugin::EngineOptions {
        compiler: wasftp::plugin::Compiler::this_executable(COMPILE_SUBCOMMAND)?,
        ..Default::default()
    };
    let server = wasftp::ServerBuilder::new(config).engine_options(engine).start().await?;
    for fingerprint in server.fingerprints() {
        println!("host key fingerprint: {fingerprint}");
    }
    if let Some(password) = dev_password {
        let addr = server.local_addr();
        println!("DEV MODE: in-memory storage, nothing is persisted. Not for production.");
        println!("  user: demo   password: {password}");
        println!("  connect: sftp -P {} demo@{}", addr.port(), addr.ip());
    }
    println!("wasftp listening on {}", server.local_addr());

    serve_until_stopped(&server, config_path.as_deref(), listen).await;
    tracing::info!("shutting down (a second signal stops at once)");
    tokio::select! {
        _ = server.shutdown() => {}
        _ = wait_for_signal() => tracing::warn!("second signal: stopping without waiting for sessions"),
    }
    Ok(())
}

/// Until SIGTERM or Ctrl-C; each SIGHUP re-reads the configuration (or,
/// in dev mode, reloads the plugins). A configuration that does not parse
/// changes nothing and says why. The signals are listened for all along,
/// so a SIGTERM during a long reload is not lost.
async fn serve_until_stopped(server: &wasftp::RunningServer, config_path: Option<&std::path::Path>, listen: Option<SocketAddr>) {
    #[cfg(unix)]
    {
        use futures::future::FusedFuture as _;
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).expect("installing the SIGHUP handler");
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        let mut interrupt = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
        let mut reloading = std::pin::pin!(futures::future::Fuse::terminated());
        let mut again = false;
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = interrupt.recv() => return,
                _ = hangup.recv() => {
                    if reloading.is_terminated() {
                        reloading.set(futures::FutureExt::fuse(reload(server, config_path, listen)));
                    } else {
                        // One at a time; one more once this one is done.
                        again = true;
                    }
                }
                () = &mut reloading => {
                    if std::mem::take(&mut again) {
                        reloading.set(futures::FutureExt::fuse(reload(server, config_path, listen)));
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (server, config_path, listen);
        wait_for_signal().await
    }
}

async fn reload(server: &wasftp::RunningServer, config_path: Option<&std::path::Path>, listen: Option<SocketAddr>) {
    tracing::info!("SIGHUP: reloading");
    match config_path {
        None => server.reload_plugins().await,
        Some(path) => match Config::from_file(path) {
            Err(e) => tracing::error!("the configuration was not reloaded, nothing changed: {e:#}"),
            Ok(mut config) => {
                if let Some(listen) = listen {
                    config.listen = listen;
                }
                if let Err(e) = server.reload_config(config).await {
                    tracing::error!("the configuration was not reloaded: {e:#}");
                }
            }
        },
    }
}

fn random_password() -> String {
    rand::thread_rng().sample_iter(rand::distributions::Alphanumeric).take(20).map(char::from).collect()
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
