//! The per-store state behind the `shmgate_v1` imports: the policy, the
//! handle table, and what this store created.

use std::sync::Arc;

use shmgate_core::{Errno, Mode, OFlags};

use super::policy::{HANDLES_LIMIT, ShmPolicy};
use crate::segment::{Identity, open_shared, unlink_if_same};
use crate::{Segment, unlink};

/// The shmgate state of one wasmtime store: put it in the store's data and
/// reach it through [`add_to_linker`](super::add_to_linker).
///
/// Dropping it closes every handle and, with
/// [`auto_unlink`](super::ShmPolicyBuilder::auto_unlink), unlinks the
/// segments this store created (if their names still refer to them).
#[derive(Debug)]
pub struct ShmCtx {
    policy: ShmPolicy,
    table: HandleTable,
    /// Segments this store created and has not unlinked (host name and
    /// identity), for `auto_unlink`.
    created: Vec<(Arc<[u8]>, Identity)>,
    /// How many segments this store has created over its life, for the
    /// `max_created` quota (unlinking one does not give the create back).
    created_total: usize,
}

#[derive(Debug)]
struct Entry {
    seg: Segment,
    /// Opened `RDWR`.
    writable: bool,
    /// This handle's open created the segment (it may size it).
    created_here: bool,
}

impl ShmCtx {
    /// A context enforcing `policy`.
    pub fn new(policy: ShmPolicy) -> ShmCtx {
        ShmCtx {
            policy,
            table: HandleTable::default(),
            created: Vec::new(),
            created_total: 0,
        }
    }

    /// The policy this context enforces.
    pub fn policy(&self) -> &ShmPolicy {
        &self.policy
    }

    /// How many handles the guest holds open.
    pub fn open_handles(&self) -> usize {
        self.table.len
    }

    /// The host names of the segments this store created and did not
    /// unlink, oldest first.
    pub fn created(&self) -> impl Iterator<Item = &[u8]> {
        self.created.iter().map(|(name, _)| &**name)
    }

    /// `open`: checks flags, mode, name and rights, then opens
    /// `<prefix><name>` and returns a new handle.
    pub(crate) fn open(&mut self, guest_name: &[u8], oflags: u32, mode: u32) -> Result<u32, Errno> {
        let flags = OFlags::from_bits(oflags)?;
        let mode = Mode::from_bits(mode)?;
        if mode.is_special() {
            return Err(Errno::PERM);
        }
        let name = self.policy.resolve(guest_name)?;
        let p = &self.policy;
        let denied = (p.read_only && flags.needs_write())
            || (flags.contains(OFlags::CREATE) && !p.allow_create)
            || (flags.contains(OFlags::TRUNC) && !p.allow_resize);
        if denied {
            return Err(Errno::ACCES);
        }
        if self.table.len >= p.max_handles.min(HANDLES_LIMIT) {
            return Err(Errno::MFILE);
        }
        let mode = Mode::from_bits(mode.bits() & p.create_mode.bits())?;
        let (seg, created_here) = self.open_counting_creates(&name, flags, mode)?;
        if created_here {
            self.created_total += 1;
            let identity = seg.identity()?;
            self.created.push((name, identity));
        }
        let writable = !flags.is_read_only();
        self.table.insert(Entry {
            seg,
            writable,
            created_here,
        })
    }

    /// Opens `name`, telling whether this open created it, so creates can
    /// be counted against `max_created` exactly. A plain `CREATE` is tried
    /// as `CREATE | EXCL` first and falls back to opening what exists.
    fn open_counting_creates(
        &self,
        name: &Arc<[u8]>,
        flags: OFlags,
        mode: Mode,
    ) -> Result<(Segment, bool), Errno> {
        let open = |flags| open_shared(Arc::clone(name), flags, mode).map_err(|e| e.errno());
        let existing_only =
            OFlags::from_bits(flags.bits() & !(OFlags::CREATE | OFlags::EXCL).bits())?;
        if !flags.contains(OFlags::CREATE) {
            return Ok((open(flags)?, false));
        }
        let may_create = self.created_total < self.policy.max_created;
        // A name can be unlinked between our two attempts; a few rounds
        // settle it, and a guest cannot make this loop forever alone.
        for _ in 0..4 {
            if may_create {
                match open(flags | OFlags::EXCL) {
                    Ok(seg) => return Ok((seg, true)),
                    Err(Errno::EXIST) if !flags.contains(OFlags::EXCL) => {}
                    Err(e) => return Err(e),
                }
            } else if flags.contains(OFlags::EXCL) {
                return Err(Errno::DQUOT);
            }
            match open(existing_only) {
                Ok(seg) => return Ok((seg, false)),
                Err(Errno::NOENT) if !may_create => return Err(Errno::DQUOT),
                Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Errno::AGAIN)
    }

    /// `unlink`: needs the unlink right.
    pub(crate) fn unlink(&mut self, guest_name: &[u8]) -> Result<(), Errno> {
        let name = self.policy.resolve(guest_name)?;
        if !self.policy.allow_unlink {
            return Err(Errno::ACCES);
        }
        unlink(&*name).map_err(|e| e.errno())?;
        self.created.retain(|(created, _)| *created != name);
        Ok(())
    }

    /// `close`.
    pub(crate) fn close(&mut self, handle: i32) -> Result<(), Errno> {
        self.table.remove(handle).map(drop)
    }

    /// `size`.
    pub(crate) fn size(&self, handle: i32) -> Result<u64, Errno> {
        self.table.get(handle)?.seg.len().map_err(|e| e.errno())
    }

    /// `set_size`: needs a writable handle and the resize right, unless
    /// this handle created the segment; bounded by `max_segment_size`.
    pub(crate) fn set_size(&self, handle: i32, size: i64) -> Result<(), Errno> {
        let entry = self.table.get(handle)?;
        if !entry.writable {
            return Err(Errno::BADF);
        }
        if !(self.policy.allow_resize || entry.created_here) {
            return Err(Errno::ACCES);
        }
        let size = u64::try_from(size).map_err(|_| Errno::INVAL)?;
        if size > self.policy.max_segment_size {
            return Err(Errno::FBIG);
        }
        entry.seg.set_len(size).map_err(|e| e.errno())
    }

    /// `read`: copies from the segment at `offset` into `buf` (guest
    /// memory); short at the end of the segment.
    pub(crate) fn read(&self, handle: i32, offset: i64, buf: &mut [u8]) -> Result<usize, Errno> {
        let entry = self.table.get(handle)?;
        let offset = checked_range(offset, buf.len())?;
        entry.seg.read_at(buf, offset).map_err(|e| e.errno())
    }

    /// `write`: copies `buf` (guest memory) into the segment at `offset`;
    /// short at the end of the segment, never grows it.
    pub(crate) fn write(&self, handle: i32, offset: i64, buf: &[u8]) -> Result<usize, Errno> {
        let entry = self.table.get(handle)?;
        if !entry.writable {
            return Err(Errno::BADF);
        }
        let offset = checked_range(offset, buf.len())?;
        entry.seg.write_at(buf, offset).map_err(|e| e.errno())
    }
}

/// `EINVAL` for a negative offset, `EOVERFLOW` if `offset + len` passes
/// `i64::MAX` (the largest file offset).
fn checked_range(offset: i64, len: usize) -> Result<u64, Errno> {
    let start = u64::try_from(offset).map_err(|_| Errno::INVAL)?;
    let len = i64::try_from(len).map_err(|_| Errno::OVERFLOW)?;
    offset.checked_add(len).ok_or(Errno::OVERFLOW)?;
    Ok(start)
}

impl Drop for ShmCtx {
    fn drop(&mut self) {
        self.table = HandleTable::default(); // close every handle first
        if self.policy.auto_unlink {
            for (name, identity) in self.created.drain(..) {
                unlink_if_same(&name, identity);
            }
        }
    }
}

/// Guest handles: a slot index in the low 16 bits and the slot's
/// generation in the next 15, so a handle is a non-negative `i32` and a
/// closed handle stays invalid after its slot is reused (until the 15-bit
/// generation wraps, after 32768 reuses of that slot).
#[derive(Debug, Default)]
struct HandleTable {
    slots: Vec<Slot>,
    free: Vec<u16>,
    len: usize,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u16,
    entry: Option<Entry>,
}

const GENERATION_MASK: u16 = 0x7fff;

impl HandleTable {
    fn insert(&mut self, entry: Entry) -> Result<u32, Errno> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u16::try_from(self.slots.len()).map_err(|_| Errno::MFILE)?;
                self.slots.push(Slot::default());
                i
            }
        };
        let slot = &mut self.slots[usize::from(index)];
        slot.entry = Some(entry);
        self.len += 1;
        Ok(u32::from(slot.generation) << 16 | u32::from(index))
    }

    fn slot(&self, handle: i32) -> Option<(usize, u16)> {
        let h = u32::try_from(handle).ok()?;
        let index = usize::from(u16::try_from(h & 0xffff).ok()?);
        let generation = u16::try_from(h >> 16).ok()?;
        Some((index, generation))
    }

    fn get(&self, handle: i32) -> Result<&Entry, Errno> {
        let (index, generation) = self.slot(handle).ok_or(Errno::BADF)?;
        match self.slots.get(index) {
            Some(slot) if slot.generation == generation => slot.entry.as_ref().ok_or(Errno::BADF),
            _ => Err(Errno::BADF),
        }
    }

    fn remove(&mut self, handle: i32) -> Result<Entry, Errno> {
        let (index, generation) = self.slot(handle).ok_or(Errno::BADF)?;
        let slot = match self.slots.get_mut(index) {
            Some(slot) if slot.generation == generation => slot,
            _ => return Err(Errno::BADF),
        };
        let entry = slot.entry.take().ok_or(Errno::BADF)?;
        slot.generation = slot.generation.wrapping_add(1) & GENERATION_MASK;
        self.len -= 1;
        // `index` came from a u16 handle field, so it fits.
        self.free
            .push(u16::try_from(index).map_err(|_| Errno::BADF)?);
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_range_rules() {
        assert_eq!(checked_range(0, 10), Ok(0));
        assert_eq!(checked_range(-1, 0), Err(Errno::INVAL));
        assert_eq!(checked_range(i64::MIN, 0), Err(Errno::INVAL));
        assert_eq!(checked_range(i64::MAX, 1), Err(Errno::OVERFLOW));
        assert_eq!(checked_range(i64::MAX, 0), Ok(i64::MAX as u64));
    }
}
