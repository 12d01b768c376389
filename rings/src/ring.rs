//! Single-producer single-consumer rings in shared memory, with a doorbell: how an
//! application hands work requests to the worker and gets completions back without a
//! system call per request. The consumer says when it is about to sleep; only then does the
//! producer ring the doorbell (an eventfd), so a busy pair never enters the kernel.
//!
//! A full ring is back-pressure: `push` hands the entry back, nothing is lost.

use std::{
    ffi::CStr,
    io,
    marker::PhantomData,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use crate::shm::Shared;

/// Types that may cross shared memory as they are: `repr(C)`, no pointers, every bit
/// pattern valid.
///
/// # Safety
/// Implementors must be plain old data as described.
pub unsafe trait Entry: Copy + Send + 'static {}

// SAFETY: plain integers.
unsafe impl Entry for u64 {}

/// Marks a ring's control block (and its layout version).
const MAGIC: u32 = 0x786e_7231; // "xnr1"

/// One counter on a cache line of its own: the producer and the consumer each write one.
#[repr(C, align(64))]
struct Line(AtomicU32);

/// The start of a ring's shared memory.
#[repr(C)]
struct Control {
    magic: AtomicU32,
    entry_size: AtomicU32,
    capacity: AtomicU32,
    /// Either side gone for good (a process that exits says so; see `close`).
    closed: AtomicU32,
    /// Entries pushed, ever (wrapping).
    produced: Line,
    /// Entries popped, ever (wrapping).
    consumed: Line,
    /// 1 while the consumer sleeps on the doorbell.
    sleeping: Line,
}

const ENTRIES_AT: usize = size_of::<Control>();

/// A ring's shared parts: its memory and its doorbell.
pub struct RingFds {
    pub memory: OwnedFd,
    pub doorbell: OwnedFd,
}

struct Ring<T> {
    shm: Arc<Shared>,
    doorbell: OwnedFd,
    mask: u32,
    _entries: PhantomData<T>,
}

impl<T: Entry> Ring<T> {
    fn control(&self) -> &Control {
        // SAFETY: the mapping starts with a Control (checked at open), page aligned, and
        // lives as long as `self.shm`; its fields are atomics.
        unsafe { &*(self.shm.as_ptr() as *const Control) }
    }

    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: entries follow the control block; `index & mask` < capacity, and the
        // mapping holds capacity entries (checked at open).
        unsafe {
            self.shm
                .as_ptr()
                .add(ENTRIES_AT)
                .cast::<T>()
                .add((index & self.mask) as usize)
        }
    }

    fn open(shm: Shared, doorbell: OwnedFd) -> io::Result<Ring<T>> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        if shm.len() < ENTRIES_AT {
            return Err(bad("shared memory too small for a ring"));
        }
        let ring = Ring {
            shm: Arc::new(shm),
            doorbell,
            mask: 0,
            _entries: PhantomData,
        };
        let c = ring.control();
        let capacity = c.capacity.load(Ordering::Acquire);
        if c.magic.load(Ordering::Acquire) != MAGIC
            || c.entry_size.load(Ordering::Relaxed) as usize != size_of::<T>()
            || !capacity.is_power_of_two()
            || ENTRIES_AT + capacity as usize * size_of::<T>() > ring.shm.len()
        {
            return Err(bad("not a ring of this entry type"));
        }
        Ok(Ring {
            mask: capacity - 1,
            ..ring
        })
    }

    fn ring_doorbell(&self) {
        let one: u64 = 1;
        // SAFETY: an 8-byte write to our eventfd; a full counter (EAGAIN) already wakes.
        unsafe {
            libc::write(
                self.doorbell.as_raw_fd(),
                (&raw const one).cast(),
                size_of::<u64>(),
            )
        };
    }
}

/// Creates a ring of `capacity` entries (a power of two) named `name`.
pub fn create<T: Entry>(name: &CStr, capacity: u32) -> io::Result<(Producer<T>, RingFds)> {
    assert!(capacity.is_power_of_two());
    let shm = Shared::create(name, ENTRIES_AT + capacity as usize * size_of::<T>())?;
    // SAFETY: a fresh mapping we alone see yet; the Control lies at its start.
    let c = unsafe { &*(shm.as_ptr() as *const Control) };
    c.entry_size.store(size_of::<T>() as u32, Ordering::Relaxed);
    c.capacity.store(capacity, Ordering::Relaxed);
    c.magic.store(MAGIC, Ordering::Release);
    // SAFETY: plain syscall; the descriptor is owned at once.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned to us.
    let doorbell = unsafe { OwnedFd::from_raw_fd(raw) };
    let fds = RingFds {
        memory: shm.fd().try_clone_to_owned()?,
        doorbell: doorbell.try_clone()?,
    };
    let ring = Ring::open(shm, doorbell)?;
    Ok((
        Producer {
            ring,
            produced: 0,
            consumed: 0,
        },
        fds,
    ))
}

/// The side that pushes.
pub struct Producer<T> {
    ring: Ring<T>,
    produced: u32,
    /// The consumer's count as last read: a push reads it again only when that looks full.
    consumed: u32,
}

impl<T: Entry> Producer<T> {
    /// The producer side of a ring another process created and handed over.
    pub fn open(fds: RingFds) -> io::Result<Producer<T>> {
        let ring: Ring<T> = Ring::open(Shared::map(fds.memory)?, fds.doorbell)?;
        let c = ring.control();
        let (produced, consumed) = (
            c.produced.0.load(Ordering::Acquire),
            c.consumed.0.load(Ordering::Acquire),
        );
        Ok(Producer {
            ring,
            produced,
            consumed,
        })
    }

    fn capacity(&self) -> u32 {
        self.ring.mask + 1
    }

    /// Entries that fit now.
    pub fn free(&mut self) -> u32 {
        self.consumed = self.ring.control().consumed.0.load(Ordering::Acquire);
        self.capacity() - self.produced.wrapping_sub(self.consumed)
    }

    /// Queues `v`; a full ring hands it back (back-pressure: try again later).
    pub fn push(&mut self, v: T) -> Result<(), T> {
        if self.produced.wrapping_sub(self.consumed) == self.capacity() && self.free() == 0 {
            return Err(v);
        }
        // SAFETY: an entry the consumer has released (the count above says so), which it
        // will not read until `produced` says it is published.
        unsafe { self.ring.slot(self.produced).write(v) };
        self.produced = self.produced.wrapping_add(1);
        Ok(())
    }

    /// Publishes what was pushed and wakes the consumer if it sleeps.
    pub fn publish(&mut self) {
        let c = self.ring.control();
        c.produced.0.store(self.produced, Ordering::Release);
        // Full fence: the sleeping flag must be read after the publication is visible, or
        // a consumer deciding to sleep in between would miss it (its side fences too).
        std::sync::atomic::fence(Ordering::SeqCst);
        if c.sleeping.0.load(Ordering::Relaxed) != 0 {
            self.ring.ring_doorbell();
        }
    }

    /// Whether the other side has closed the ring.
    pub fn closed(&self) -> bool {
        self.ring.control().closed.load(Ordering::Acquire) != 0
    }

    /// Says this side is gone for good, and wakes the consumer to see it.
    pub fn close(&self) {
        self.ring.control().closed.store(1, Ordering::Release);
        self.ring.ring_doorbell();
    }
}

/// The side that pops.
pub struct Consumer<T> {
    ring: Ring<T>,
    consumed: u32,
}

impl<T: Entry> Consumer<T> {
    /// The consumer side of a ring (handed over, or from [`create`]'s descriptors).
    pub fn open(fds: RingFds) -> io::Result<Consumer<T>> {
        let ring: Ring<T> = Ring::open(Shared::map(fds.memory)?, fds.doorbell)?;
        let consumed = ring.control().consumed.0.load(Ordering::Acquire);
        Ok(Consumer { ring, consumed })
    }

    /// Entries ready now.
    pub fn ready(&self) -> u32 {
        self.ring
            .control()
            .produced
            .0
            .load(Ordering::Acquire)
            .wrapping_sub(self.consumed)
    }

    /// The next entry, if there is one (given back to the producer at once).
    pub fn pop(&mut self) -> Option<T> {
        if self.ready() == 0 {
            return None;
        }
        // SAFETY: an entry the producer published (`ready` read `produced` with Acquire).
        let v = unsafe { self.ring.slot(self.consumed).read() };
        self.consumed = self.consumed.wrapping_add(1);
        self.ring
            .control()
            .consumed
            .0
            .store(self.consumed, Ordering::Release);
        Some(v)
    }

    /// Says the consumer is about to sleep (waiting on [`Consumer::doorbell`] with others);
    /// whether something is ready after all (then do not sleep). Call
    /// [`Consumer::disarm`] once awake.
    pub fn arm(&self) -> bool {
        let c = self.ring.control();
        c.sleeping.0.store(1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::SeqCst);
        self.ready() > 0 || c.closed.load(Ordering::Acquire) != 0
    }

    pub fn disarm(&self) {
        self.ring.control().sleeping.0.store(0, Ordering::Relaxed);
        self.drain_doorbell();
    }

    /// Sleeps until something is ready, the producer closes, or `timeout` passes; whether
    /// something is ready.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        let c = self.ring.control();
        c.sleeping.0.store(1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.ready() == 0 && c.closed.load(Ordering::Acquire) == 0 {
            let mut p = libc::pollfd {
                fd: self.ring.doorbell.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                c.sleeping.0.store(0, Ordering::Relaxed);
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.drain_doorbell();
        }
        c.sleeping.0.store(0, Ordering::Relaxed);
        Ok(self.ready() > 0)
    }

    fn drain_doorbell(&self) {
        let mut v: u64 = 0;
        // SAFETY: an 8-byte read from our non-blocking eventfd.
        unsafe {
            libc::read(
                self.ring.doorbell.as_raw_fd(),
                (&raw mut v).cast(),
                size_of::<u64>(),
            )
        };
    }

    /// The doorbell, for a caller that waits on several at once (poll it for reading).
    pub fn doorbell(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.ring.doorbell.as_fd()
    }

    pub fn closed(&self) -> bool {
        self.ring.control().closed.load(Ordering::Acquire) != 0
    }

    /// Says this side is gone for good.
    pub fn close(&self) {
        self.ring.control().closed.store(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(capacity: u32) -> (Producer<u64>, Consumer<u64>) {
        let (p, fds) = create::<u64>(c"xnic-ring-test", capacity).unwrap();
        (p, Consumer::open(fds).unwrap())
    }

    #[test]
    fn a_full_ring_pushes_back_and_loses_nothing() {
        let (mut p, mut c) = pair(4);
        for i in 0..4 {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(99), Err(99));
        p.publish();
        assert_eq!(c.pop(), Some(0));
        p.push(4).unwrap();
        p.publish();
        let got: Vec<u64> = std::iter::from_fn(|| c.pop()).collect();
        assert_eq!(got, vec![1, 2, 3, 4]);
        assert_eq!(c.pop(), None);
    }

    #[test]
    fn a_million_entries_cross_in_order_between_threads() {
        let (mut p, mut c) = pair(256);
        const N: u64 = 1_000_000;
        let producer = std::thread::spawn(move || {
            let mut i = 0;
            while i < N {
                match p.push(i) {
                    Ok(()) => i += 1,
                    Err(_) => {
                        p.publish();
                        std::thread::yield_now();
                    }
                }
                if i % 64 == 0 {
                    p.publish();
                }
            }
            p.publish();
            p.close();
        });
        let mut next = 0;
        while next < N {
            match c.pop() {
                Some(v) => {
                    assert_eq!(v, next);
                    next += 1;
                }
                None => {
                    c.wait(Duration::from_millis(100)).unwrap();
                }
            }
        }
        producer.join().unwrap();
        assert!(c.closed());
    }

    #[test]
    fn a_sleeping_consumer_is_woken_by_the_doorbell() {
        let (mut p, mut c) = pair(8);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            p.push(7).unwrap();
            p.publish();
            p
        });
        let start = std::time::Instant::now();
        assert!(c.wait(Duration::from_secs(5)).unwrap());
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "woken, not timed out"
        );
        assert_eq!(c.pop(), Some(7));
        t.join().unwrap();
    }

    #[test]
    fn memory_of_another_kind_is_refused() {
        let (_p, fds) = create::<u64>(c"xnic-ring-test", 8).unwrap();
        #[derive(Clone, Copy)]
        #[repr(C)]
        struct Big([u64; 4]);
        // SAFETY: plain data.
        unsafe impl Entry for Big {}
        assert!(Consumer::<Big>::open(fds).is_err());
    }
}
