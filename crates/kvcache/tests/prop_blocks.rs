//! Property tests of the block manager as a plain state machine: random sequences start (with
//! a prefix lookup), grow, commit and finish over a small token alphabet so prefixes repeat;
//! after every operation the reference counts, capacity and prefix index are checked against
//! an independent model.

use kiln_kvcache::{BlockManager, BlockTable};
use proptest::prelude::*;
use std::collections::HashMap;

const BS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    /// Start a sequence whose tokens are `tokens` (a prefix lookup, then reserve and commit
    /// `written` of them).
    Start { tokens: Vec<u32>, written: usize },
    /// Start a sequence with the tokens of sequence `i % live` plus `extra` (a shared prefix).
    Fork { i: usize, extra: Vec<u32> },
    /// Grow sequence `i % live` by `n` tokens drawn from `seed`.
    Grow { i: usize, n: usize, seed: u32 },
    /// Finish sequence `i % live`.
    Finish { i: usize },
    /// Cut sequence `i % live` back to `keep` tokens.
    Truncate { i: usize, keep: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (proptest::collection::vec(0u32..3, 0..24), 0usize..24)
            .prop_map(|(tokens, written)| Op::Start { tokens, written }),
        3 => (any::<usize>(), proptest::collection::vec(0u32..3, 0..6))
            .prop_map(|(i, extra)| Op::Fork { i, extra }),
        3 => (any::<usize>(), 1usize..9, any::<u32>()).prop_map(|(i, n, seed)| Op::Grow { i, n, seed }),
        2 => any::<usize>().prop_map(|i| Op::Finish { i }),
        1 => (any::<usize>(), 0usize..20).prop_map(|(i, keep)| Op::Truncate { i, keep }),
    ]
}

struct Seq {
    tokens: Vec<u32>,
    table: BlockTable,
}

/// The model of the index: for every full-block token prefix that was registered, the block
/// and key it was registered with. Entries whose block lost its key were evicted.
type Registered = HashMap<Vec<u32>, (u32, u64)>;

fn expected_prefix(m: &BlockManager, reg: &Registered, tokens: &[u32], max: usize) -> Vec<u32> {
    let mut out = Vec::new();
    let max = max.min(tokens.len());
    let mut k = BS;
    while k <= max {
        match reg.get(&tokens[..k]) {
            Some(&(id, key)) if m.cached_key(id) == Some(key) => out.push(id),
            _ => break,
        }
        k += BS;
    }
    out
}

fn check(m: &BlockManager, seqs: &[Seq], reg: &Registered) -> Result<(), TestCaseError> {
    m.check_invariants().map_err(TestCaseError::fail)?;
    let mut refs = vec![0u32; m.n_blocks()];
    for s in seqs {
        for &b in s.table.blocks() {
            refs[b as usize] += 1;
        }
        // A table's registered blocks are still in the index (never evicted while used).
        for (i, &b) in s.table.blocks()[..s.table.n_registered()]
            .iter()
            .enumerate()
        {
            let prefix = &s.tokens[..(i + 1) * BS];
            if let Some(&(id, key)) = reg.get(prefix) {
                if id == b {
                    prop_assert_eq!(m.cached_key(b), Some(key));
                }
            }
        }
    }
    for (b, &r) in refs.iter().enumerate() {
        prop_assert_eq!(m.ref_count(b as u32), r, "block {}", b);
    }
    prop_assert!(m.in_use() <= m.n_blocks());
    Ok(())
}

fn register_new(m: &BlockManager, s: &Seq, reg: &mut Registered) {
    for (i, &b) in s.table.blocks()[..s.table.n_registered()]
        .iter()
        .enumerate()
    {
        if let Some(key) = m.cached_key(b) {
            reg.entry(s.tokens[..(i + 1) * BS].to_vec())
                .and_modify(|e| {
                    if m.cached_key(e.0) != Some(e.1) {
                        *e = (b, key);
                    }
                })
                .or_insert((b, key));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn block_manager_keeps_its_invariants(n_blocks in 1usize..24, ops in proptest::collection::vec(op(), 1..60)) {
        let mut m = BlockManager::new(n_blocks, BS).unwrap();
        let mut seqs: Vec<Seq> = Vec::new();
        let mut reg: Registered = HashMap::new();
        let mut total_hits = 0;
        for op in ops {
            let op = match op {
                Op::Fork { i, extra } if !seqs.is_empty() => {
                    let mut tokens = seqs[i % seqs.len()].tokens.clone();
                    tokens.extend(extra);
                    let written = tokens.len();
                    Op::Start { tokens, written }
                }
                op => op,
            };
            match op {
                Op::Start { tokens, written } => {
                    let written = written.min(tokens.len());
                    let want = expected_prefix(&m, &reg, &tokens, written);
                    let before = m.stats();
                    let mut table = m.lookup(&tokens, written);
                    // Lookups return exactly the longest cached full-block prefix.
                    prop_assert_eq!(table.blocks(), &want[..]);
                    let after = m.stats();
                    prop_assert_eq!(after.hits - before.hits, want.len() as u64);
                    total_hits += want.len();
                    prop_assert_eq!(
                        (after.hits + after.misses) - (before.hits + before.misses),
                        (written / BS) as u64
                    );
                    if m.reserve(&mut table, written).is_err() {
                        m.free(&mut table);
                    } else {
                        m.commit(&mut table, &tokens[..written]);
                        let s = Seq { tokens: tokens[..written].to_vec(), table };
                        register_new(&m, &s, &mut reg);
                        seqs.push(s);
                    }
                }
                Op::Grow { i, n, seed } if !seqs.is_empty() => {
                    let k = i % seqs.len();
                    let s = &mut seqs[k];
                    let new_len = s.tokens.len() + n;
                    if m.reserve(&mut s.table, new_len).is_ok() {
                        s.tokens.extend((0..n as u32).map(|j| (seed >> (j % 16)) & 1));
                        m.commit(&mut s.table, &s.tokens);
                        let s = &seqs[k];
                        register_new(&m, s, &mut reg);
                    }
                }
                Op::Finish { i } if !seqs.is_empty() => {
                    let k = i % seqs.len();
                    let mut s = seqs.swap_remove(k);
                    m.free(&mut s.table);
                    prop_assert!(s.table.is_empty());
                }
                Op::Truncate { i, keep } if !seqs.is_empty() => {
                    let k = i % seqs.len();
                    let s = &mut seqs[k];
                    let want = keep.min(s.tokens.len());
                    let keep = m.truncate(&mut s.table, want);
                    prop_assert!(keep <= want && keep + BS > want);
                    s.tokens.truncate(keep);
                    prop_assert_eq!(s.table.blocks().len(), keep.div_ceil(BS));
                    // The block the sequence writes next is its own and unregistered.
                    if !keep.is_multiple_of(BS) {
                        let b = s.table.blocks()[keep / BS];
                        prop_assert_eq!(m.ref_count(b), 1);
                        prop_assert_eq!(m.cached_key(b), None);
                    }
                }
                _ => {}
            }
            check(&m, &seqs, &reg)?;
        }
        let _ = total_hits;
        // Finishing everything returns every reference count to zero.
        for mut s in seqs.drain(..) {
            m.free(&mut s.table);
        }
        check(&m, &seqs, &reg)?;
        prop_assert_eq!(m.in_use(), 0);
        prop_assert_eq!(m.available(), n_blocks);
    }
}
