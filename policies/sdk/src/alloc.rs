//! The allocator every policy gets: a bump allocator over an arena in the module's own
//! zero-initialised data.
//!
//! The host runs each evaluation in a fresh instance and throws it away, so nothing ever needs
//! to be freed. Allocating from memory the module already has (instead of `memory.grow`) also
//! spares the host from re-protecting memory pages after every evaluation. When the arena is
//! exhausted, allocation falls back to the system allocator (which grows memory as usual).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

/// Enough for a typical evaluation (a tenant of a few KiB, its lookups and violations) with
/// room to spare, and small enough that the module's whole memory — 16 KiB of stack, ~32 KiB
/// of data, the arena — fits in one 64 KiB page: the host resets every page of a sandbox's
/// memory after each evaluation, so this size is paid on every evaluation.
const ARENA_BYTES: usize = 16 * 1024;

#[repr(C, align(16))]
struct Arena(UnsafeCell<[u8; ARENA_BYTES]>);

pub struct BumpAllocator {
    arena: Arena,
    next: UnsafeCell<usize>,
}

// SAFETY: WebAssembly policies are single-threaded; the host never shares an instance.
unsafe impl Sync for BumpAllocator {}

impl BumpAllocator {
    pub const fn new() -> Self {
        BumpAllocator { arena: Arena(UnsafeCell::new([0; ARENA_BYTES])), next: UnsafeCell::new(0) }
    }

    fn owns(&self, ptr: *mut u8) -> bool {
        let start = self.arena.0.get() as usize;
        (start..start + ARENA_BYTES).contains(&(ptr as usize))
    }
}

impl Default for BumpAllocator {
    fn default() -> Self {
        Self::new()
    }
}

unsafe impl GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded (see `Sync` above); `next` is only touched here.
        let next = unsafe { &mut *self.next.get() };
        let base = self.arena.0.get() as usize;
        let start = (base + *next).next_multiple_of(layout.align());
        let end = start + layout.size();
        if end <= base + ARENA_BYTES {
            *next = end - base;
            start as *mut u8
        } else {
            // SAFETY: forwarding the caller's layout to the system allocator.
            unsafe { std::alloc::System.alloc(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.owns(ptr) {
            // SAFETY: pointers outside the arena came from the system allocator.
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Grow in place when this is the most recent arena allocation.
        let next = unsafe { &mut *self.next.get() };
        let base = self.arena.0.get() as usize;
        if self.owns(ptr) && ptr as usize + layout.size() == base + *next && ptr as usize + new_size <= base + ARENA_BYTES {
            *next = ptr as usize + new_size - base;
            return ptr;
        }
        // SAFETY: `layout` describes `ptr`; the new block is at least as aligned.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
