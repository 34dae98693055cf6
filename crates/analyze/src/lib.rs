//! The static analyzer: which functions of a module may be migration points, which must stay on
//! the device (and the call path that pins them there), and the constraints a partition must
//! respect. It reads the module model only (no execution), as CloneCloud's analyzer read the
//! bytecode.
//!
//! CloneCloud's three constraints, for wasm and WASI:
//! 1. **Pinned to the device**: a function that can reach a device-only import (by the
//!    [`Policy`]; by default every non-WASI import but wasi-threads' spawn: the clone serves or
//!    proxies all of WASI preview 1) runs on the device, and so does everything that can reach
//!    it.
//! 2. **State outside migrated memory**: the thread's state that migrates is the arguments, the
//!    mutable globals and linear memory 0. Tables do not migrate, so a function that can change a
//!    table is pinned (reported with its path); a second memory does not migrate, so a module with
//!    one pins every function. WASI descriptors live on the device: a migrated function may use
//!    stdio, the preopens and descriptors it opens and closes itself; status queries and stdin
//!    reads are proxied to the device, which removes the constraint for them; a descriptor the
//!    device opened is checked at run time (the call then runs locally).
//! 3. **No nesting**: at most one migrated frame per thread, so of two candidates where one can
//!    reach the other, at most one is chosen ([`Analysis::nesting`]).

mod policy;

pub use policy::{Class, Policy, PolicyError};

use clonecloud_model::{FunctionKind, Module};
use std::collections::VecDeque;

/// Where a function may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Either side.
    Either,
    /// The device only (it can reach a device-only import or change non-migrating state).
    Device,
    /// The clone only (it can reach a clone-only import).
    Clone,
    /// Neither: it can reach both a device-only and a clone-only import.
    Nowhere,
}

/// One import function.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportReport {
    /// Function index.
    pub index: u32,
    pub module: String,
    pub name: String,
    pub class: Class,
}

/// One defined function.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FunctionReport {
    pub index: u32,
    /// Demangled name, or `#INDEX`.
    pub name: String,
    /// Whether it may be a migration point.
    pub candidate: bool,
    pub placement: Placement,
    /// Why it is not a candidate or where it must run, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The call path (names) from this function to what pins it, the last element being the
    /// import or the function that changes a table.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    /// For a candidate that can reach the device's camera, position or screen (the device API): the
    /// call path there. It may migrate, and each such call from the clone is then a round trip
    /// to the device.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_path: Vec<String>,
}

/// Candidates that cannot both migrate: `inner` are reachable from `outer`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Nesting {
    pub outer: u32,
    pub inner: Vec<u32>,
}

/// The analyzer's findings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Analysis {
    pub imports: Vec<ImportReport>,
    pub functions: Vec<FunctionReport>,
    pub nesting: Vec<Nesting>,
    /// Where constraint 2 applies in this module, in words.
    pub notes: Vec<String>,
    /// Candidates that can reach a WASI call naming a path (they read the preopened directories,
    /// which must be on the clone before they can migrate).
    pub file_users: Vec<u32>,
}

impl Analysis {
    /// The candidates' function indices, sorted.
    pub fn candidates(&self) -> Vec<u32> {
        self.functions.iter().filter(|f| f.candidate).map(|f| f.index).collect()
    }

    /// The report of function `index`, if the module defines it.
    pub fn function(&self, index: u32) -> Option<&FunctionReport> {
        self.functions.iter().find(|f| f.index == index)
    }
}

/// For every function, the next step on a shortest call path to one of `sinks` (the sink itself
/// maps to itself), by a breadth-first search backwards from all sinks at once.
fn paths_to(module: &Module, sinks: &[u32]) -> Vec<Option<u32>> {
    let n = module.functions.len();
    let mut callers: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (f, callees) in module.call_graph.callees.iter().enumerate() {
        for &c in callees {
            callers[c as usize].push(f as u32);
        }
    }
    let mut next = vec![None; n];
    let mut queue = VecDeque::new();
    for &s in sinks {
        if next[s as usize].is_none() {
            next[s as usize] = Some(s);
            queue.push_back(s);
        }
    }
    while let Some(c) = queue.pop_front() {
        for &f in &callers[c as usize] {
            if next[f as usize].is_none() {
                next[f as usize] = Some(c);
                queue.push_back(f);
            }
        }
    }
    next
}

fn path(module: &Module, next: &[Option<u32>], from: u32) -> Vec<String> {
    let mut out = vec![module.functions[from as usize].display_name()];
    let mut at = from;
    while let Some(n) = next[at as usize] {
        if n == at {
            break;
        }
        out.push(module.functions[n as usize].display_name());
        at = n;
    }
    out
}

/// Where the path from `from` ends.
fn sink(next: &[Option<u32>], from: u32) -> u32 {
    let mut at = from;
    while let Some(n) = next[at as usize] {
        if n == at {
            break;
        }
        at = n;
    }
    at
}

fn import_name(module: &Module, f: u32) -> Option<(String, String)> {
    match module.functions[f as usize].kind {
        FunctionKind::Imported { import } => Some((module.imports[import].module.clone(), module.imports[import].name.clone())),
        FunctionKind::Defined { .. } => None,
    }
}

/// Analyzes `module` under `policy`.
pub fn analyze(module: &Module, policy: &Policy) -> Analysis {
    let mut imports = Vec::new();
    let (mut device_sinks, mut clone_sinks, mut hardware) = (Vec::new(), Vec::new(), Vec::new());
    for f in &module.functions {
        if let Some((m, n)) = import_name(module, f.index) {
            let class = policy.class(&m, &n);
            match class {
                Class::DeviceOnly => device_sinks.push(f.index),
                Class::CloneOnly => clone_sinks.push(f.index),
                Class::Device => hardware.push(f.index),
                Class::Proxiable | Class::Pure => {}
            }
            imports.push(ImportReport { index: f.index, module: m, name: n, class });
        }
    }
    // Changing a table is state that does not migrate: such functions are sinks too.
    device_sinks.extend(&module.table_mutators);
    let to_device = paths_to(module, &device_sinks);
    let to_clone = paths_to(module, &clone_sinks);
    let to_hardware = paths_to(module, &hardware);
    let extra_memory = module.memories.len() > 1;

    let mut functions = Vec::new();
    for f in module.functions.iter().filter(|f| f.is_defined()) {
        let (dev, clo) = (to_device[f.index as usize].is_some(), to_clone[f.index as usize].is_some());
        let (mut placement, mut reason, mut p) = (Placement::Either, None, Vec::new());
        if extra_memory {
            placement = Placement::Device;
            reason = Some("the module has more than one memory, and only memory 0 migrates".to_string());
        } else if dev && clo {
            placement = Placement::Nowhere;
            p = path(module, &to_device, f.index);
            reason = Some(format!("it can reach a device-only import and a clone-only one ({})", path(module, &to_clone, f.index).join(" -> ")));
        } else if dev {
            placement = Placement::Device;
            p = path(module, &to_device, f.index);
            reason = Some(match import_name(module, sink(&to_device, f.index)) {
                Some((m, n)) => format!("pinned to the device: it can reach `{m}`.`{n}` ({})", policy.class(&m, &n).label()),
                None => "pinned to the device: it can change a table, which does not migrate".to_string(),
            });
        } else if clo {
            placement = Placement::Clone;
            p = path(module, &to_clone, f.index);
            reason = Some("must run on the clone: it can reach a clone-only import".to_string());
        }
        let point = module.check_point(f.index);
        if let (Err(e), None) = (&point, &reason) {
            reason = Some(format!("cannot be a migration point: {e}"));
        }
        // wasi-threads' entry: a call of it is a thread's whole life, from its start handshake
        // with the spawning thread (which runs on meanwhile) to its end.
        let thread_entry = module.exports.iter().any(|e| e.name == "wasi_thread_start" && e.index == f.index && matches!(e.kind, clonecloud_model::ExportKind::Func));
        if thread_entry && reason.is_none() {
            reason = Some("not a migration point: the entry of a wasi-threads thread (its call is the thread's whole life)".to_string());
        }
        let candidate = point.is_ok() && !thread_entry && matches!(placement, Placement::Either | Placement::Clone);
        let device_path = if candidate && to_hardware[f.index as usize].is_some() { path(module, &to_hardware, f.index) } else { Vec::new() };
        functions.push(FunctionReport { index: f.index, name: f.display_name(), candidate, placement, reason, path: p, device_path });
    }

    let candidates: Vec<u32> = functions.iter().filter(|f| f.candidate).map(|f| f.index).collect();
    let mut is_candidate = vec![false; module.functions.len()];
    for &c in &candidates {
        is_candidate[c as usize] = true;
    }
    let nesting = candidates
        .iter()
        .filter_map(|&c| {
            let inner: Vec<u32> = module.call_graph.reachable(c).into_iter().filter(|&d| d != c && is_candidate[d as usize]).collect();
            (!inner.is_empty()).then_some(Nesting { outer: c, inner })
        })
        .collect();

    let mut notes = vec![
        "Arguments, mutable globals and memory 0 migrate with the thread.".to_string(),
        "WASI descriptors stay on the device: a migrated function may use stdio, the preopens and descriptors it opens and closes itself; status queries and stdin reads are proxied to the device; a descriptor the device opened is checked at run time (that call then runs locally).".to_string(),
    ];
    if !module.table_mutators.is_empty() {
        notes.push(format!("{} function(s) change a table, which does not migrate: they and their callers stay on the device.", module.table_mutators.len()));
    }
    if extra_memory {
        notes.push(format!("The module has {} memories; only memory 0 migrates, so nothing is a candidate.", module.memories.len()));
    }
    let path_calls: Vec<u32> = imports
        .iter()
        .filter(|i| i.module == "wasi_snapshot_preview1" && matches!(i.name.as_str(), "path_open" | "path_filestat_get" | "fd_readdir"))
        .map(|i| i.index)
        .collect();
    let to_files = paths_to(module, &path_calls);
    let file_users = candidates.iter().copied().filter(|&c| to_files[c as usize].is_some()).collect();
    Analysis { imports, functions, nesting, notes, file_users }
}
