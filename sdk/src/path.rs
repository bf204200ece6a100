//! Helpers for the contract's paths: absolute, `/`-separated, no `.`/`..`,
//! no empty segments, no NUL.

use crate::Error;
use crate::error::invalid;

/// Normalises `path` to the contract form: a leading `/`, `//` and `.`
/// collapsed, no trailing `/` (except for the root). Any `..` segment or NUL
/// is rejected with `Error::InvalidInput`.
pub fn normalize(path: &str) -> Result<String, Error> {
    if path.contains('\0') {
        return Err(invalid("path contains NUL"));
    }
    let mut out = String::with_capacity(path.len() + 1);
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(invalid("path contains '..'")),
            s => {
                out.push('/');
                out.push_str(s);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The parent of a normalised path; `None` for `/`.
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" || path.is_empty() {
        return None;
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    match trimmed.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&trimmed[..i]),
        None => None,
    }
}

/// The last segment of a normalised path; `None` for `/`.
pub fn file_name(path: &str) -> Option<&str> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let name = match trimmed.rfind('/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    };
    (!name.is_empty()).then_some(name)
}

/// Checks that `name` is a single valid entry name (no `/`, no NUL, not
/// empty, `.` or `..`).
pub fn validate_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(invalid(format!("invalid name {name:?}")));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(invalid("name contains '/' or NUL"));
    }
    Ok(())
}

/// `dir` joined with one entry `name`; `dir` is normalised first.
pub fn join(dir: &str, name: &str) -> Result<String, Error> {
    validate_name(name)?;
    let mut out = normalize(dir)?;
    if !out.ends_with('/') {
        out.push('/');
    }
    out.push_str(name);
    Ok(out)
}

/// The segments of a normalised path (`/` has none).
pub fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_cases() {
        assert_eq!(normalize("/").unwrap(), "/");
        assert_eq!(normalize("").unwrap(), "/");
        assert_eq!(normalize("a/b").unwrap(), "/a/b");
        assert_eq!(normalize("//a///b/").unwrap(), "/a/b");
        assert_eq!(normalize("/./a/./b/.").unwrap(), "/a/b");
        assert_eq!(normalize("/a b/ü").unwrap(), "/a b/ü");
        assert_eq!(normalize("/a/..b/c..").unwrap(), "/a/..b/c..");
        assert!(matches!(normalize("/a/../b"), Err(Error::InvalidInput(_))));
        assert!(matches!(normalize(".."), Err(Error::InvalidInput(_))));
        assert!(matches!(normalize("/a/b/.."), Err(Error::InvalidInput(_))));
        assert!(matches!(normalize("/a\0b"), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn parent_and_name() {
        assert_eq!(parent("/"), None);
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a/b/c"), Some("/a/b"));
        assert_eq!(file_name("/"), None);
        assert_eq!(file_name("/a"), Some("a"));
        assert_eq!(file_name("/a/bc"), Some("bc"));
    }

    #[test]
    fn join_cases() {
        assert_eq!(join("/", "a").unwrap(), "/a");
        assert_eq!(join("/a", "b").unwrap(), "/a/b");
        assert_eq!(join("/a/", "b").unwrap(), "/a/b");
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(
                matches!(join("/a", bad), Err(Error::InvalidInput(_))),
                "{bad:?}"
            );
        }
        assert!(join("/../x", "b").is_err());
    }

    #[test]
    fn segments_cases() {
        assert_eq!(segments("/").count(), 0);
        assert_eq!(segments("/a/b").collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn error_helpers() {
        assert_eq!(crate::io_error("x"), Error::Io("x".into()));
        assert_eq!(crate::invalid("y"), Error::InvalidInput("y".into()));
        let e: Error = std::io::Error::from(std::io::ErrorKind::NotFound).into();
        assert_eq!(e, Error::NotFound);
    }
}
