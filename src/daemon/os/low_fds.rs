//! Low fd numbers, held open from start-up, through which a starting child gets
//! the fds it keeps, so that it never copies (nor, at exec, closes) the rest of clusterd's.
//!
//! Why: a child created with a copy of clusterd's fd table copies every fd of every instance
//! — worker channels, log pipes — and its exec then closes them one by one (`filp_close` on
//! each): with 1000 instances ~3000 fds per start, a third of the CPU a mass start of 1000
//! costs, growing with the square of the count. Instead the child shares clusterd's table
//! (`CLONE_FILES`) and its first act is `close_range(limit, ~0, CLOSE_RANGE_UNSHARE)`, with
//! which the kernel gives it a table of its own holding only the fds below `limit` (Linux
//! 5.9; the copy stops at `limit`). The fds it is to keep (stdin, stdout, stderr, the
//! passed ones) are first duplicated into free slots, below `limit`, and the slots are given
//! back to their placeholder once the child has exec'd.
//!
//! A pool of them, because clusterd does not wait for one child's exec before it starts the
//! next (spawn.rs): each child still on its way to exec holds the slots it was lent (4 or 5
//! for most instances). A child also copies the slots lent to the others (all below
//! `limit`); they are close-on-exec, so its exec closes those few.
//!
//! The slots are reserved at start-up, when clusterd's fd numbers are still small; each
//! holds a duplicate of /dev/null between starts, so no other open can take its number.
//! Under a descriptor limit below 1024 none are: the table is small enough to copy, and the
//! 41 descriptors are better left to the instances and the control connections.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// How many fds a child can get this way: stdin, stdout, stderr and 13 passed fds. A start
/// that passes more takes the copying way.
const MOST_PER_CHILD: usize = 16;

/// How many slots there are: enough for about eight children at a time on their way to
/// exec, and no more, since every child copies them all.
const SLOTS: usize = 40;

/// The reserved numbers.
struct Slots {
    /// Held open on /dev/null between lends.
    slots: Vec<OwnedFd>,
    /// Which slots are lent now.
    lent: [bool; SLOTS],
    /// What a slot holds between lends.
    placeholder: OwnedFd,
    /// The first fd number above every slot (and the placeholder).
    limit: RawFd,
}

/// `None` until reserved, under a small descriptor limit, or where /dev/null cannot be
/// opened.
static RESERVED: Mutex<Option<Slots>> = Mutex::new(None);

/// Cleared when a child finds that the kernel cannot unshare its fd table this way: from
/// then on every start copies the table, as before Linux 5.9.
static UNSHARE_WORKS: AtomicBool = AtomicBool::new(true);

/// Set once a child has unshared its table this way: until then a start waits for its
/// child's exec, to fall back if it could not.
static UNSHARE_SEEN: AtomicBool = AtomicBool::new(false);

/// Reserves the slots, once (clusterd's start-up; a later first start does it otherwise).
pub(crate) fn reserve() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        *RESERVED.lock().unwrap_or_else(|e| e.into_inner()) = open_slots();
    });
}

/// Below this descriptor limit no slots are reserved: a table that small costs little to
/// copy, and 41 descriptors would be a real share of it.
const SMALLEST_LIMIT: u64 = 1024;

/// clusterd's descriptor limit (soft), 0 if it cannot be read.
fn descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into a valid local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    limit.rlim_cur
}

fn open_slots() -> Option<Slots> {
    if descriptor_limit() < SMALLEST_LIMIT {
        return None;
    }
    let null = std::fs::File::open("/dev/null").ok()?;
    let placeholder = above_stdio(null.as_raw_fd())?;
    let slots = (0..SLOTS)
        .map(|_| above_stdio(placeholder.as_raw_fd()))
        .collect::<Option<Vec<_>>>()?;
    let limit = slots
        .iter()
        .map(AsRawFd::as_raw_fd)
        .chain([placeholder.as_raw_fd()])
        .max()?
        + 1;
    Some(Slots {
        slots,
        lent: [false; SLOTS],
        placeholder,
        limit,
    })
}

/// A duplicate of `fd` numbered 3 or above: were clusterd started with 0, 1 or 2 closed, a
/// slot there would stand in for its own stdin, stdout or stderr.
fn above_stdio(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: fcntl on an fd of ours; the new fd is ours alone.
    let duplicate = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    // SAFETY: a new, open fd that nothing else owns.
    (duplicate >= 0).then(|| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(duplicate) })
}

/// The kernel refused `CLOSE_RANGE_UNSHARE` to a child: stop lending.
pub(crate) fn unshare_unsupported() {
    UNSHARE_WORKS.store(false, Ordering::Relaxed);
}

/// A child unshared its table this way: the kernel can.
pub(crate) fn unshare_works() {
    UNSHARE_SEEN.store(true, Ordering::Relaxed);
}

/// Whether a child has been seen to unshare its table this way.
pub(crate) fn unshare_known_to_work() -> bool {
    UNSHARE_SEEN.load(Ordering::Relaxed)
}

/// `sources` duplicated into slots, until dropped.
#[derive(Debug)]
pub(crate) struct Lent {
    /// The index of each slot taken, in order.
    taken: Vec<usize>,
    /// The slot each source is in, in order.
    pub(crate) fds: Vec<RawFd>,
    /// What the child passes to `close_range`: every fd it keeps is below.
    pub(crate) limit: RawFd,
}

/// What [`lend`] could do.
#[derive(Debug)]
pub(crate) enum Lending {
    Lent(Lent),
    /// Too few slots are free (lent to children that have not exec'd yet): wait for one.
    Busy,
    /// Too many sources, no slots, or a kernel that cannot unshare a table this way: the
    /// caller copies the whole table.
    No,
}

/// Puts `sources` into free slots.
pub(crate) fn lend(sources: &[RawFd]) -> Lending {
    if !UNSHARE_WORKS.load(Ordering::Relaxed) || sources.len() > MOST_PER_CHILD {
        return Lending::No;
    }
    reserve();
    let mut guard = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    let Some(slots) = guard.as_mut() else {
        return Lending::No;
    };
    let free: Vec<usize> = (0..SLOTS)
        .filter(|&i| !slots.lent[i])
        .take(sources.len())
        .collect();
    if free.len() < sources.len() {
        return Lending::Busy;
    }
    let mut lent = Lent {
        taken: Vec::with_capacity(sources.len()),
        fds: Vec::with_capacity(sources.len()),
        limit: slots.limit,
    };
    for (&source, index) in sources.iter().zip(free) {
        let Some(slot) = slots.slots.get(index).map(AsRawFd::as_raw_fd) else {
            give_back(slots, &lent);
            return Lending::No;
        };
        // SAFETY: dup3 onto a slot this module owns and no one else is lent; it replaces
        // the placeholder atomically, so the number is never free for another thread's open.
        if unsafe { libc::dup3(source, slot, libc::O_CLOEXEC) } < 0 {
            give_back(slots, &lent);
            return Lending::No;
        }
        slots.lent[index] = true;
        lent.taken.push(index);
        lent.fds.push(slot);
    }
    Lending::Lent(lent)
}

/// The slots get their placeholder back (closing the duplicates), and are free.
fn give_back(slots: &mut Slots, lent: &Lent) {
    for (&slot, &index) in lent.fds.iter().zip(&lent.taken) {
        // SAFETY: as in `lend`: the slot is ours, and gets its placeholder back, closing
        // the duplicate of the source.
        unsafe { libc::dup3(slots.placeholder.as_raw_fd(), slot, libc::O_CLOEXEC) };
        if let Some(lent_now) = slots.lent.get_mut(index) {
            *lent_now = false;
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(slots) = RESERVED.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            give_back(slots, self);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lent_slots_hold_the_sources_and_get_their_placeholder_back() {
        // No spawn may take a block meanwhile.
        let _forking = crate::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let sources = [read.as_raw_fd(), write.as_raw_fd(), write.as_raw_fd()];
        let same_file = |a: RawFd, b: RawFd| {
            let stat = |fd: RawFd| {
                let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
                // SAFETY: fstat writes a whole `stat` into the buffer when it succeeds.
                assert_eq!(unsafe { libc::fstat(fd, stat.as_mut_ptr()) }, 0);
                // SAFETY: initialized by the successful fstat.
                unsafe { stat.assume_init() }
            };
            let (a, b) = (stat(a), stat(b));
            (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
        };
        let slots = {
            let Lending::Lent(lent) = lend(&sources) else {
                // Only under a small descriptor limit are there none.
                assert!(descriptor_limit() < SMALLEST_LIMIT, "no slots");
                return;
            };
            assert_eq!(lent.fds.len(), 3);
            for (&slot, &source) in lent.fds.iter().zip(&sources) {
                assert!(slot < lent.limit);
                assert!(slot >= 3, "a slot at {slot} would stand in for stdio");
                assert!(same_file(slot, source));
            }
            lent.fds.clone()
        };
        let null = std::fs::File::open("/dev/null").unwrap();
        for slot in slots {
            assert!(same_file(slot, null.as_raw_fd()));
        }
        assert!(matches!(
            lend(&[read.as_raw_fd(); MOST_PER_CHILD + 1]),
            Lending::No
        ));
        // Slots for each child on its way to exec; none once too few are free.
        let lent: Vec<Lending> = (0..SLOTS / 3).map(|_| lend(&sources)).collect();
        assert!(lent.iter().all(|b| matches!(b, Lending::Lent(_))));
        assert!(matches!(lend(&sources), Lending::Busy));
        drop(lent);
        assert!(matches!(lend(&sources), Lending::Lent(_)));
    }
}
