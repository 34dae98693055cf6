//! The analyzer on hand-written modules whose answer is known: pinning by reachability (with the
//! path), the policy's classes, table changes, a second memory, reference types, nesting.

use clonecloud_analyze::{Placement, Policy, analyze};
use clonecloud_model::Module;

const APP: &str = r#"(module
  (import "env" "camera" (func $camera (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "gpu" "matmul" (func $matmul (param i32) (result i32)))
  (memory 1)
  (table 2 funcref)
  (func $helper (result i32) call $camera)
  (func $process (result i32) call $helper)
  (func $compute (param i32) (result i32) local.get 0 call $square)
  (func $square (param i32) (result i32) local.get 0 local.get 0 i32.mul)
  (func $print (result i32) i32.const 0 i32.const 0 i32.const 0 i32.const 0 call $fd_write)
  (func $accelerate (result i32) i32.const 3 call $matmul)
  (func $confused (result i32) call $accelerate call $process i32.add)
  (func $patch (table.set (i32.const 0) (ref.null func)))
  (func $patch_caller call $patch)
  (func $takes_ref (param externref))
  (func $main (export "_start") (drop (call $compute (call $process))) (drop (call $print)))
)"#;

fn analysis(policy: &str) -> (Module, clonecloud_analyze::Analysis) {
    let wasm = wat::parse_str(APP).unwrap();
    let module = Module::parse(&wasm).unwrap();
    let policy = Policy::parse(policy, "test").unwrap();
    let a = analyze(&module, &policy);
    (module, a)
}

fn find<'a>(a: &'a clonecloud_analyze::Analysis, m: &Module, name: &str) -> &'a clonecloud_analyze::FunctionReport {
    let f = m.functions.iter().find(|f| f.display_name() == name).unwrap_or_else(|| panic!("no {name}"));
    a.function(f.index).unwrap()
}

#[test]
fn reaching_a_device_only_import_pins_with_the_path() {
    let (m, a) = analysis("clone-only = [\"gpu.*\"]");
    let process = find(&a, &m, "process");
    assert_eq!(process.placement, Placement::Device);
    assert!(!process.candidate);
    assert_eq!(process.path, ["process", "helper", "camera"]);
    assert!(process.reason.as_deref().unwrap().contains("`env`.`camera`"), "{:?}", process.reason);
    assert_eq!(find(&a, &m, "main").placement, Placement::Device, "main reaches camera through process");
    // Pure computation and WASI output (proxiable by default) may migrate.
    for name in ["compute", "square", "print"] {
        let f = find(&a, &m, name);
        assert!(f.candidate && f.placement == Placement::Either, "{name}: {f:?}");
    }
    // A clone-only import must run on the clone; reaching both is placeable nowhere.
    let acc = find(&a, &m, "accelerate");
    assert!(acc.candidate && acc.placement == Placement::Clone, "{acc:?}");
    assert_eq!(find(&a, &m, "confused").placement, Placement::Nowhere);
    // Tables do not migrate: changing one pins the function and its callers.
    for name in ["patch", "patch_caller"] {
        let f = find(&a, &m, name);
        assert_eq!(f.placement, Placement::Device, "{name}");
        assert!(f.reason.as_deref().unwrap().contains("table"), "{name}: {:?}", f.reason);
    }
    // Reference-typed parameters cannot migrate.
    let r = find(&a, &m, "takes_ref");
    assert!(!r.candidate && r.reason.as_deref().unwrap().contains("migration point"), "{r:?}");
}

#[test]
fn a_policy_pins_what_reaches_the_imports_it_names() {
    let (m, a) = analysis("device-only = [\"wasi_snapshot_preview1.fd_*\"]\nproxiable = [\"env.camera\"]");
    let print = find(&a, &m, "print");
    assert_eq!(print.placement, Placement::Device);
    assert_eq!(print.path, ["print", "fd_write"]);
    // The camera is now proxiable: process may migrate (gpu is device-only by default).
    assert!(find(&a, &m, "process").candidate);
    assert_eq!(find(&a, &m, "accelerate").placement, Placement::Device);
}

#[test]
fn nesting_pairs_are_candidates_that_reach_each_other() {
    let (m, a) = analysis("");
    let compute = find(&a, &m, "compute").index;
    let square = find(&a, &m, "square").index;
    let n = a.nesting.iter().find(|n| n.outer == compute).expect("compute reaches square");
    assert_eq!(n.inner, [square]);
    assert!(a.nesting.iter().all(|n| !n.inner.contains(&n.outer)));
    // Pinned functions take part in no pair.
    let pinned: Vec<u32> = a.functions.iter().filter(|f| !f.candidate).map(|f| f.index).collect();
    assert!(a.nesting.iter().all(|n| !pinned.contains(&n.outer) && n.inner.iter().all(|i| !pinned.contains(i))));
}

#[test]
fn a_second_memory_pins_everything() {
    let wasm = wat::parse_str("(module (memory 1) (memory 1) (func $f) (func $g call $f))").unwrap();
    let m = Module::parse(&wasm).unwrap();
    let a = analyze(&m, &Policy::builtin());
    assert!(a.candidates().is_empty());
    assert!(a.notes.iter().any(|n| n.contains("memory 0")));
}
