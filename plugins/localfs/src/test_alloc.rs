//! The unit tests' allocator: the system's, except that it can be told to
//! refuse every allocation on one thread, so a test can see an allocation
//! failure answered as an error (the instance keeps running) rather than
//! by an abort (which traps the instance).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates.
    static REFUSING: Cell<bool> = const { Cell::new(false) };
}

struct Refusable;

fn refusing() -> bool {
    REFUSING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is passed to `System` unchanged, or answered with
// null, which `GlobalAlloc` allows for a failed allocation.
unsafe impl GlobalAlloc for Refusable {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refusing() { std::ptr::null_mut() } else { unsafe { System.alloc(layout) } }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refusing() { std::ptr::null_mut() } else { unsafe { System.realloc(ptr, layout, new_size) } }
    }
}

#[global_allocator]
static ALLOCATOR: Refusable = Refusable;

/// Runs `f` with every allocation on this thread refused.
pub fn without_memory<T>(f: impl FnOnce() -> T) -> T {
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            REFUSING.with(|r| r.set(false));
        }
    }
    REFUSING.with(|r| r.set(true));
    let _restore = Restore;
    f()
}
