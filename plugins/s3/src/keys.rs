//! Where a contract path lives in the bucket. A file `/a/b.txt` is the key
//! `PREFIX` + `a/b.txt`; a directory `/a` is every key under `PREFIX` +
//! `a/`, and its marker is the zero-byte object of that name (what the AWS
//! console, rclone and SFTPGo write for an empty folder).

/// The keys of one session: the plugin's prefix, then the session's own.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// `plugin` and `session` are normalised prefixes (`config::key_prefix`).
    pub fn new(plugin: &str, session: &str) -> Self {
        Self { prefix: format!("{plugin}{session}") }
    }

    /// The key of the file at `path` (`None` for the root, which is no file).
    pub fn file(&self, path: &str) -> Option<String> {
        let relative = path.trim_start_matches('/');
        (!relative.is_empty()).then(|| format!("{}{relative}", self.prefix))
    }

    /// The prefix every key under the directory `path` starts with; the
    /// root's is the session's prefix (possibly empty).
    pub fn dir(&self, path: &str) -> String {
        match self.file(path) {
            Some(key) => format!("{key}/"),
            None => self.prefix.clone(),
        }
    }

    /// The name of an entry listed under `dir` (a key or a common prefix),
    /// `None` for the directory's own marker or a name the contract cannot
    /// carry (empty, or with NUL).
    pub fn entry_name<'k>(&self, dir: &str, key: &'k str) -> Option<&'k str> {
        let name = key.strip_prefix(dir)?.trim_end_matches('/');
        let listable = !matches!(name, "" | "." | "..") && !name.contains('/') && !name.contains('\0');
        listable.then_some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_keys_under_both_prefixes() {
        let keys = Keys::new("wasftp/", "tenants/42/");
        assert_eq!(keys.file("/invoice.pdf").unwrap(), "wasftp/tenants/42/invoice.pdf");
        assert_eq!(keys.file("/"), None);
        assert_eq!(keys.dir("/"), "wasftp/tenants/42/");
        assert_eq!(keys.dir("/a/b"), "wasftp/tenants/42/a/b/");
        let bare = Keys::new("", "");
        assert_eq!(bare.file("/x").unwrap(), "x");
        assert_eq!(bare.dir("/"), "");
    }

    #[test]
    fn listed_names_leave_out_the_marker() {
        let keys = Keys::new("", "t/");
        assert_eq!(keys.entry_name("t/d/", "t/d/"), None, "the directory's own marker");
        assert_eq!(keys.entry_name("t/d/", "t/d/f.txt"), Some("f.txt"));
        assert_eq!(keys.entry_name("t/d/", "t/d/sub/"), Some("sub"));
        assert_eq!(keys.entry_name("t/d/", "t/d//x"), None);
        assert_eq!(keys.entry_name("t/d/", "other"), None);
        assert_eq!(keys.entry_name("t/d/", "t/d/./"), None, "no path can name it");
        assert_eq!(keys.entry_name("t/d/", "t/d/.."), None);
    }
}
