//! One behaviour suite for every plugin, whatever its language: what the
//! contract (`wit/storage.wit`) promises, checked call by call against a
//! loaded plugin, in a directory of its own that is removed afterwards.
//! `wasftp plugin check` runs it, and so do the tests, against every
//! bundled and test plugin. A behaviour resting on a capability the plugin
//! does not declare, or on writes a read-only plugin refuses, is skipped,
//! and says so.

mod cases;
mod read_only;

use std::fmt::Write as _;
use std::time::Duration;

use crate::plugin::{Plugin, Session, SessionContext, StorageError};

/// The longest one behaviour may take.
const CASE_LIMIT: Duration = Duration::from_secs(60);

/// How one behaviour came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// What was wrong, in words for the plugin's author.
    Failed(String),
    /// Why it was not checked.
    Skipped(String),
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub behaviour: &'static str,
    pub verdict: Verdict,
}

/// The suite's outcomes for one plugin.
#[derive(Debug, Clone)]
pub struct Report {
    pub plugin: String,
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// Whether nothing failed (skips are not failures).
    pub fn passed(&self) -> bool {
        !self.outcomes.iter().any(|o| matches!(o.verdict, Verdict::Failed(_)))
    }

    pub fn failed(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().filter(|o| matches!(o.verdict, Verdict::Failed(_)))
    }

    /// One line per behaviour: `pass`, `FAIL` with the reason, or `skip`
    /// with why; then the counts.
    pub fn table(&self) -> String {
        let width = self.outcomes.iter().map(|o| o.behaviour.len()).max().unwrap_or(0);
        let mut out = String::new();
        let (mut passed, mut failed, mut skipped) = (0, 0, 0);
        for outcome in &self.outcomes {
            let (mark, why) = match &outcome.verdict {
                Verdict::Passed => {
                    passed += 1;
                    ("pass", String::new())
                }
                Verdict::Failed(why) => {
                    failed += 1;
                    ("FAIL", format!("  {why}"))
                }
                Verdict::Skipped(why) => {
                    skipped += 1;
                    ("skip", format!("  ({why})"))
                }
            };
            let line = if why.is_empty() { outcome.behaviour.to_string() } else { format!("{:<width$}{why}", outcome.behaviour) };
            let _ = writeln!(out, "{mark}  {line}");
        }
        let _ = writeln!(out, "{}: {passed} passed, {failed} failed, {skipped} skipped", self.plugin);
        out
    }
}

/// The behaviours a read-only plugin is checked on, beyond those of every plugin.
pub fn read_only_behaviours() -> Vec<&'static str> {
    read_only::ALL.iter().map(|case| case.behaviour).collect()
}

/// Runs every behaviour against `plugin`, in a new directory under `/`,
/// in a session of user and tenant `wasftp-check`.
pub async fn run(plugin: &Plugin) -> Report {
    let context = SessionContext { user: "wasftp-check".into(), tenant: "wasftp-check".into(), attributes: Vec::new() };
    run_as(plugin, context).await
}

/// The same, in a session for `context`.
pub async fn run_as(plugin: &Plugin, context: SessionContext) -> Report {
    let mut outcomes = Vec::new();
    let session = match plugin.open_session(context).await {
        Ok(session) => session,
        Err(e) => {
            outcomes.push(Outcome { behaviour: "a session opens", verdict: Verdict::Failed(format!("open-session failed: {e}")) });
            return Report { plugin: plugin.name().to_string(), outcomes };
        }
    };
    let base = format!("/wasftp-check-{:016x}", rand::random::<u64>());
    let writable = match session.make_dir(&base, None).await {
        Ok(()) => Ok(base.clone()),
        Err(e) => Err(e),
    };
    let check = cases::Check {
        session: &session,
        caps: plugin.capabilities().clone(),
        base: writable.as_ref().map(Clone::clone).map_err(|e| e.to_string()),
        created: Default::default(),
    };
    // Only a plugin that refuses writes is checked read-only: on any other
    // failure the check touches nothing it did not make.
    let read_only = matches!(writable, Err(StorageError::PermissionDenied | StorageError::Unsupported));
    if let Err(e) = &writable
        && !read_only
    {
        outcomes.push(Outcome {
            behaviour: "a directory for the check is made",
            verdict: Verdict::Failed(format!(
                "make-dir {base} failed with {e}; a read-only plugin answers permission-denied or unsupported"
            )),
        });
    }
    for case in cases::ALL.iter().filter(|case| writable.is_ok() || !case.writes) {
        outcomes.push(Outcome { behaviour: case.behaviour, verdict: within_limit((case.run)(&check)).await });
    }
    if let Err(e) = &writable {
        let writing = cases::ALL.iter().filter(|case| case.writes).count();
        let why = if read_only { "so the plugin is checked read-only" } else { "so nothing that writes is checked" };
        outcomes.push(Outcome {
            behaviour: "the behaviours that write",
            verdict: Verdict::Skipped(format!("{writing} of them: make-dir {base} gave {e}, {why}")),
        });
    }
    if read_only {
        let found = match tokio::time::timeout(CASE_LIMIT, read_only::discover(&session)).await {
            Ok(found) => found,
            Err(_) => read_only::Found { trouble: Some(format!("no end within {CASE_LIMIT:?}")), ..Default::default() },
        };
        let check = read_only::Check { session: &session, caps: plugin.capabilities().clone(), found };
        for case in read_only::ALL {
            outcomes.push(Outcome { behaviour: case.behaviour, verdict: within_limit((case.run)(&check)).await });
        }
        // A plugin that refused make-dir yet made the directory: not left there.
        if session.file_info(&base).await.is_ok() {
            let _ = session.remove_dir(&base).await;
        }
    }
    if writable.is_ok() {
        let made = std::mem::take(&mut *check.created.lock().expect("created paths lock"));
        let verdict = match tokio::time::timeout(CASE_LIMIT, cleanup(&session, &base, made)).await {
            Ok(Ok(())) => Verdict::Passed,
            Ok(Err(left)) => Verdict::Failed(left),
            Err(_) => Verdict::Failed(format!("removing what the check made took longer than {CASE_LIMIT:?}")),
        };
        outcomes.push(Outcome { behaviour: "what the check made is removed", verdict });
    }
    Report { plugin: plugin.name().to_string(), outcomes }
}

async fn within_limit(run: impl std::future::Future<Output = Verdict>) -> Verdict {
    match tokio::time::timeout(CASE_LIMIT, run).await {
        Ok(verdict) => verdict,
        Err(_) => Verdict::Failed(format!("no answer within {CASE_LIMIT:?}")),
    }
}

/// Removes what the check made (and only that), newest first so a
/// directory's entries go before it, then its directory; says what is left.
async fn cleanup(session: &Session, base: &str, made: Vec<String>) -> Result<(), String> {
    for path in made.iter().rev() {
        if session.remove_file(path).await.is_err() {
            let _ = session.remove_dir(path).await;
        }
    }
    match session.remove_dir(base).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let left = session.list_dir(base, None, 10).await.map(|page| page.entries.into_iter().map(|e| e.name).collect::<Vec<_>>());
            Err(format!("remove-dir {base} failed with {e}; left there: {left:?}"))
        }
    }
}
