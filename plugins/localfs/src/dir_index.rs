//! The order a directory is listed in, page by page: names sorted by their
//! bytes, and a cursor that is the last name returned (at most
//! [`MAX_NAME_LEN`] bytes, as every listed name).
//!
//! One read of a directory keeps a window of that order: the smallest
//! names after the cursor, as many as fit a byte budget (all of them, for
//! most directories). The pages after it are served from the window while
//! the directory is unchanged, so a directory is read once per window, not
//! once per page, and memory stays within the budget however large it is.

use std::collections::{BinaryHeap, VecDeque};
use std::rc::Rc;

use wasftp_sdk::prelude::*;

/// Longest name listed: the host drops longer ones (NAME_MAX), and the
/// cursor, a name, stays this short.
pub const MAX_NAME_LEN: usize = 255;

/// What one name costs to hold.
fn cost(name: &str) -> usize {
    name.len() + std::mem::size_of::<String>()
}

/// Consecutive names of one directory, in order: every name after
/// `after` up to the last one held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// The names are those after this (from the start without one).
    after: Option<String>,
    names: Vec<String>,
    /// Names after the last one held exist in the directory.
    more: bool,
    bytes: usize,
}

impl Window {
    /// Whether the window holds the names that follow `cursor` (or knows
    /// there are none).
    pub fn covers(&self, cursor: Option<&str>) -> bool {
        let starts_in_time = match (self.after.as_deref(), cursor) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(after), Some(cursor)) => after <= cursor,
        };
        let ends_late_enough = !self.more || self.names.last().is_some_and(|last| cursor.is_none_or(|c| c < last.as_str()));
        starts_in_time && ends_late_enough
    }

    /// Up to `count` names after `cursor` (from the window's start
    /// without one), and whether more follow them in the directory.
    pub fn page(&self, cursor: Option<&str>, count: usize) -> (Vec<String>, bool) {
        let start = cursor.map_or(0, |c| self.names.partition_point(|name| name.as_str() <= c));
        let end = start.saturating_add(count).min(self.names.len());
        (self.names[start..end].to_vec(), end < self.names.len() || self.more)
    }
}

/// Takes a directory's names one at a time, keeping the smallest ones
/// after a cursor within a byte budget (never fewer than a page).
#[derive(Debug)]
pub struct Gatherer {
    after: Option<String>,
    /// Kept whatever the budget: one page.
    floor: usize,
    budget: usize,
    /// The largest kept name on top, to go first when over budget.
    kept: BinaryHeap<String>,
    bytes: usize,
    more: bool,
}

impl Gatherer {
    /// For the names after `cursor`, at least `page` of them.
    pub fn new(budget: usize, cursor: Option<&str>, page: usize) -> Self {
        Gatherer { after: cursor.map(String::from), floor: page.max(1), budget, kept: BinaryHeap::new(), bytes: 0, more: false }
    }

    /// Takes `name` into account. `no-space` when there is no memory to
    /// hold one more name: nothing is pushed then, since a push that must
    /// grow the heap and cannot aborts the instance.
    pub fn offer(&mut self, name: String) -> Result<()> {
        if self.after.as_deref().is_some_and(|after| name.as_str() <= after) {
            return Ok(());
        }
        self.kept.try_reserve(1).map_err(|_| Error::NoSpace)?;
        self.bytes += cost(&name);
        self.kept.push(name);
        while self.bytes > self.budget && self.kept.len() > self.floor {
            let largest = self.kept.pop().expect("more than the floor");
            self.bytes -= cost(&largest);
            self.more = true;
        }
        Ok(())
    }

    pub fn finish(self) -> Window {
        Window { after: self.after, names: self.kept.into_sorted_vec(), more: self.more, bytes: self.bytes }
    }
}

/// Which state of which directory a window is of: its path and what
/// changes with its entries (identity and modification time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirKey {
    pub path: String,
    pub state: String,
}

/// The windows of the directories listed last, within a byte budget.
#[derive(Debug)]
pub struct ListingCache {
    /// The most recently used first; one window per path.
    entries: VecDeque<(DirKey, Rc<Window>)>,
    bytes: usize,
    budget: usize,
}

/// Directories kept at most (a client lists a few at a time).
const CACHED_DIRECTORIES: usize = 8;

impl Default for ListingCache {
    fn default() -> Self {
        Self::new()
    }
}

impl ListingCache {
    pub const fn new() -> Self {
        ListingCache { entries: VecDeque::new(), bytes: 0, budget: 0 }
    }

    /// Bytes of names it holds at most; also the most one read of a
    /// directory keeps.
    pub fn budget(&self) -> usize {
        self.budget
    }

    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
        self.evict();
    }

    /// The window for `key` that holds what follows `cursor`.
    pub fn get(&mut self, key: &DirKey, cursor: Option<&str>) -> Option<Rc<Window>> {
        let at = self.entries.iter().position(|(k, window)| k == key && window.covers(cursor))?;
        let entry = self.entries.remove(at)?;
        let window = entry.1.clone();
        self.entries.push_front(entry);
        Some(window)
    }

    /// Forgets the window of `path`, before its directory is read again
    /// (so the old and the new one are not held at once).
    pub fn forget(&mut self, path: &str) {
        if let Some(at) = self.entries.iter().position(|(k, _)| k.path == path) {
            let (_, old) = self.entries.remove(at).expect("found above");
            self.bytes -= old.bytes;
        }
    }

    /// Keeps `window` for `key`, replacing what was kept for its path.
    pub fn insert(&mut self, key: DirKey, window: Rc<Window>) {
        self.forget(&key.path);
        if window.bytes > self.budget {
            return;
        }
        self.bytes += window.bytes;
        self.entries.push_front((key, window));
        self.evict();
    }

    fn evict(&mut self) {
        while self.bytes > self.budget || self.entries.len() > CACHED_DIRECTORIES {
            let Some((_, window)) = self.entries.pop_back() else { break };
            self.bytes -= window.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(budget: usize, names: &[&str], cursor: Option<&str>, page: usize) -> Window {
        let mut gatherer = Gatherer::new(budget, cursor, page);
        for name in names {
            gatherer.offer(name.to_string()).unwrap();
        }
        gatherer.finish()
    }

    const NAMES: [&str; 7] = ["b", "a", "é", "A", "c", "aa", "Z"];
    const SORTED: [&str; 7] = ["A", "Z", "a", "aa", "b", "c", "é"];

    /// Every name, by pages of `count`, reading the directory again only
    /// when the window held does not cover the cursor (as the listing
    /// does); also how many reads that took.
    fn list(budget: usize, count: usize) -> (Vec<String>, usize) {
        let (mut all, mut reads) = (Vec::new(), 0);
        let mut window: Option<Window> = None;
        let mut cursor: Option<String> = None;
        loop {
            if !window.as_ref().is_some_and(|w| w.covers(cursor.as_deref())) {
                window = Some(gather(budget, &NAMES, cursor.as_deref(), count));
                reads += 1;
            }
            let (names, more) = window.as_ref().expect("set above").page(cursor.as_deref(), count);
            all.extend(names.iter().cloned());
            if !more {
                return (all, reads);
            }
            assert!(!names.is_empty(), "a page with more to come has names");
            cursor = names.last().cloned();
        }
    }

    #[test]
    fn a_directory_within_budget_is_read_once_and_paged_by_cursor() {
        let whole = gather(1 << 20, &NAMES, None, 3);
        assert_eq!(whole.page(None, 3), (vec!["A".into(), "Z".into(), "a".into()], true));
        assert_eq!(whole.page(Some("a"), 3), (vec!["aa".into(), "b".into(), "c".into()], true));
        assert_eq!(whole.page(Some("c"), 3), (vec!["é".into()], false));
        assert_eq!(whole.page(Some("é"), 3), (vec![], false));
        // A cursor that is no name (removed since) resumes after where it sorts.
        assert_eq!(whole.page(Some("ab"), 1), (vec!["b".into()], true));
        for count in 1..=8 {
            assert_eq!(list(1 << 20, count), (SORTED.map(String::from).to_vec(), 1), "pages of {count}");
        }
    }

    #[test]
    fn a_directory_past_budget_is_read_by_windows_in_the_same_order() {
        // Two names' worth: windows of two (or of a page, when larger).
        let budget = 2 * cost("aa");
        for count in 1..=8 {
            let (names, reads) = list(budget, count);
            assert_eq!(names, SORTED, "pages of {count}");
            assert!(reads <= SORTED.len().div_ceil(count.max(2)), "pages of {count}: {reads} reads");
        }
        assert_eq!(list(0, 1).0, SORTED, "no budget: a window of one page");
    }

    #[test]
    fn a_window_covers_only_the_cursors_it_can_answer() {
        let window = gather(2 * cost("aa"), &NAMES, Some("Z"), 1);
        assert_eq!(window.names, ["a", "aa"]);
        assert!(window.more);
        assert!(!window.covers(None), "starts later than the beginning");
        assert!(!window.covers(Some("A")), "starts later than that cursor");
        assert!(window.covers(Some("Z")) && window.covers(Some("a")));
        assert!(!window.covers(Some("aa")), "what follows its last name is not in it");
        let last = gather(1 << 20, &NAMES, Some("b"), 1);
        assert!(!last.more && last.covers(Some("é")) && last.covers(Some("zzz")), "the end is known");
    }

    #[test]
    fn the_cache_is_bounded_and_keyed_by_the_directory_state() {
        let window = |n: usize| {
            let names: Vec<String> = (0..n).map(|i| format!("n{i:03}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            Rc::new(gather(usize::MAX, &names, None, 1))
        };
        let key = |path: &str, state: &str| DirKey { path: path.into(), state: state.into() };
        let mut cache = ListingCache::new();
        cache.set_budget(window(10).bytes * 2);
        cache.insert(key("/a", "1"), window(10));
        assert!(cache.get(&key("/a", "1"), Some("n005")).is_some());
        assert!(cache.get(&key("/a", "2"), Some("n005")).is_none(), "the directory changed");
        cache.insert(key("/a", "2"), window(10));
        assert_eq!(cache.entries.len(), 1, "one window per path");
        cache.insert(key("/b", "1"), window(10));
        cache.get(&key("/a", "2"), None);
        cache.insert(key("/c", "1"), window(10));
        assert!(cache.get(&key("/b", "1"), None).is_none(), "the least recently used went");
        assert!(cache.get(&key("/a", "2"), None).is_some());
        cache.insert(key("/huge", "1"), window(100));
        assert!(cache.get(&key("/huge", "1"), None).is_none(), "larger than the whole budget");
        assert!(cache.bytes <= cache.budget);
        cache.forget("/a");
        assert!(cache.get(&key("/a", "2"), None).is_none());
        cache.set_budget(usize::MAX);
        for i in 0..20 {
            cache.insert(key(&format!("/d{i}"), "1"), window(1));
        }
        assert_eq!(cache.entries.len(), CACHED_DIRECTORIES);
    }

    #[test]
    fn a_name_there_is_no_memory_for_is_no_space_not_an_abort() {
        let mut gatherer = Gatherer::new(usize::MAX, None, 1);
        let mut names = (0..).map(|i| format!("n{i:03}"));
        while gatherer.kept.len() < gatherer.kept.capacity() || gatherer.kept.is_empty() {
            gatherer.offer(names.next().unwrap()).unwrap();
        }
        let held = gatherer.kept.len();
        // The heap is full: one more name needs it to grow.
        let one_more = names.next().unwrap();
        let offered = crate::test_alloc::without_memory(|| gatherer.offer(one_more));
        assert_eq!(offered, Err(Error::NoSpace));
        assert_eq!(gatherer.kept.len(), held, "nothing pushed");
        assert_eq!(gatherer.offer("z".into()), Ok(()), "usable again once memory is back");
    }
}
