//! The hostile-case table ([`crate::table`]) through both ABIs, and what
//! only the component interface has: resource handles.

use shmgate_core::Errno;

use crate::abi::{Abi, Comp, Core};
use crate::common::*;
use crate::table::{run_table, table};

#[test]
fn hostile_cases_through_shmgate_v1() {
    let (ran, skipped) = run_table(|p| Box::new(Core::new(p)));
    assert_eq!(skipped, 0, "the core ABI expresses every case");
    assert_eq!(ran, table().len());
}

#[test]
fn hostile_cases_through_the_component_interface() {
    let (ran, skipped) = run_table(|p| Box::new(Comp::new(p)));
    // What it cannot express: non-UTF-8 names, flag bits it has no flag
    // for. Everything else ran and gave the same errno.
    let total = table().len();
    eprintln!("component interface: {ran} of {total} cases ran, {skipped} not expressible");
    assert_eq!(ran + skipped, total);
    assert!(
        skipped <= 30 && ran >= total - 30,
        "{skipped} of {total} cases skipped"
    );
}

/// A forged resource handle never reaches the host: the component model
/// traps the guest (where the core ABI answers `EBADF`, see `handles`),
/// and the host and the store's table are unharmed.
#[test]
fn forged_component_handles_trap_before_the_host() {
    let scope = Scope::new();
    let seg = format!("{}seg", scope.ns("a"));
    host_create(&seg, b"keep");
    let mut comp = Comp::new(scope.full("a").build().unwrap());
    let h = comp.open(b"seg", RDONLY, 0o600).unwrap().unwrap();
    for forged in [0, 1, 2, 7, 0x1_0000, u32::MAX] {
        let mut victim = Comp::new(scope.full("a").build().unwrap());
        let r = victim.forged_size(forged);
        assert!(r.is_err(), "forged handle {forged:#x}: {r:?}");
        assert_eq!(victim.ctx().open_handles(), 0);
    }
    // The other store (its handles share nothing with the victims') is fine.
    assert_eq!(comp.size(h), Ok(4));
    comp.close(h);
    assert_eq!(comp.ctx().open_handles(), 0);
}

/// A component's segments are handles of the same table: they count
/// against `max_handles` and close when the resource drops.
#[test]
fn component_segments_are_table_handles() {
    let scope = Scope::new();
    host_create(&format!("{}seg", scope.ns("a")), b"keep");
    let mut comp = Comp::new(scope.full("a").max_handles(2).build().unwrap());
    let a = comp.open(b"seg", RDONLY, 0o600).unwrap().unwrap();
    let _b = comp.open(b"seg", RDONLY, 0o600).unwrap().unwrap();
    assert_eq!(comp.ctx().open_handles(), 2);
    assert_eq!(comp.open(b"seg", RDONLY, 0o600), Some(Err(Errno::MFILE)));
    comp.close(a);
    assert_eq!(comp.ctx().open_handles(), 1);
    let c = comp.open(b"seg", RDWR, 0o600).unwrap().unwrap();
    assert_eq!(comp.write(c, 0, b"KE"), Ok(2));
    assert_eq!(comp.read(c, 0, 100).as_deref(), Ok(&b"KEep"[..]));
    // Writes never grow the segment.
    assert_eq!(comp.write(c, 2, b"EPER"), Ok(2));
    assert_eq!(comp.size(c), Ok(4));
    drop(comp);
    assert_eq!(contents(format!("{}seg", scope.ns("a"))), b"KEEP");
}

/// `atomic32`, `wait32` and `notify` mean the same through both ABIs: the
/// same sequence of operations gives the same old values, and the segment
/// ends up holding the same word.
#[test]
fn atomics_and_waits_agree_across_the_abis() {
    let scope = Scope::new();
    let seg = format!("{}seg", scope.ns("a"));
    let mut results = Vec::new();
    for comp in [false, true] {
        host_create(&seg, &[0; 8]);
        let policy = scope.full("a").build().unwrap();
        let mut abi: Box<dyn Abi> = if comp {
            Box::new(Comp::new(policy))
        } else {
            Box::new(Core::new(policy))
        };
        let h = abi.open(b"seg", RDWR, 0o600).unwrap().unwrap();
        // (op, operand, expected): store, fetch-add, load, swap, a
        // compare-exchange that succeeds and one that fails, a wrapping add.
        let ops = [
            (1, 5, 0),
            (2, 3, 0),
            (0, 0, 0),
            (3, 1, 0),
            (4, 9, 1),
            (4, 7, 1),
            (2, u32::MAX, 0),
            (0, 0, 0),
        ];
        let olds: Vec<u64> = ops
            .iter()
            .map(|&(op, operand, expected)| {
                abi.atomic32(h, 4, op, operand, expected)
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{}: op {op}: {e}", abi.name()))
            })
            .collect();
        let word = u32::from_le_bytes(contents(&seg)[4..8].try_into().unwrap());
        assert_eq!(abi.wait32(h, 4, word + 1, -1), Err(Errno::AGAIN));
        assert_eq!(abi.wait32(h, 4, word, 1000), Err(Errno::TIMEDOUT));
        assert_eq!(abi.notify(h, 4, u32::MAX), Ok(0), "nobody waits");
        abi.close(h);
        drop(abi);
        results.push((olds, word));
        std::fs::remove_file(shm_path(&seg)).unwrap();
    }
    assert_eq!(results[0], (vec![0, 5, 8, 8, 1, 9, 9, 8], 8));
    assert_eq!(results[0], results[1], "core vs component");
}
