//! The call graph: direct calls exactly, indirect calls over-approximated by type.

use std::collections::HashMap;

use crate::module::{FuncType, Module};

/// A `call_indirect` (or `call_ref`) site: any addressable function of this type may be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndirectSite {
    /// The type index the site calls through.
    pub type_index: u32,
    /// The table it reads, `None` for `call_ref`.
    pub table: Option<u32>,
}

/// Who may call whom. Direct calls (`call`, `return_call`) are exact. An indirect call may reach
/// every *addressable* function (named by an element segment or by `ref.func`) whose type is
/// structurally equal to the site's type: a sound over-approximation, since a table can only
/// hold functions that were made into references one of these two ways.
#[derive(Debug, Clone, Default)]
pub struct CallGraph {
    /// Per function index: its direct callees, sorted and deduplicated.
    pub direct: Vec<Vec<u32>>,
    /// Per function index: its indirect call sites.
    pub indirect_sites: Vec<Vec<IndirectSite>>,
    /// Per function index: every function it may call (direct and indirect), sorted, no
    /// duplicates.
    pub callees: Vec<Vec<u32>>,
    /// The addressable functions, sorted, no duplicates.
    pub addressable: Vec<u32>,
}

impl CallGraph {
    pub(crate) fn build(
        module: &Module,
        mut direct: Vec<Vec<u32>>,
        indirect_sites: Vec<Vec<IndirectSite>>,
        mut addressable: Vec<u32>,
    ) -> CallGraph {
        addressable.sort_unstable();
        addressable.dedup();
        let mut by_type: HashMap<&FuncType, Vec<u32>> = HashMap::new();
        for &f in &addressable {
            by_type.entry(module.func_type(f)).or_default().push(f);
        }
        let mut callees = Vec::with_capacity(direct.len());
        for (d, sites) in direct.iter_mut().zip(&indirect_sites) {
            d.sort_unstable();
            d.dedup();
            let mut all = d.clone();
            for site in sites {
                let ty = &module.types[site.type_index as usize];
                all.extend(by_type.get(ty).into_iter().flatten());
            }
            all.sort_unstable();
            all.dedup();
            callees.push(all);
        }
        CallGraph {
            direct,
            indirect_sites,
            callees,
            addressable,
        }
    }

    /// The functions reachable from `from` (itself included), as a sorted list.
    pub fn reachable(&self, from: u32) -> Vec<u32> {
        let mut seen = vec![false; self.callees.len()];
        let mut stack = vec![from];
        let mut out = Vec::new();
        while let Some(f) = stack.pop() {
            if std::mem::replace(&mut seen[f as usize], true) {
                continue;
            }
            out.push(f);
            stack.extend(
                self.callees[f as usize]
                    .iter()
                    .copied()
                    .filter(|&c| !seen[c as usize]),
            );
        }
        out.sort_unstable();
        out
    }
}
