//! The module model on small hand-written modules whose answers are known by construction.

use clonecloud_model::{ImportClass, ModelError, Module, RewriteConfig, rewrite, rewrite_with};

fn parse(wat: &str) -> (Vec<u8>, Module) {
    let wasm = wat::parse_str(wat).unwrap();
    let module = Module::parse(&wasm).unwrap();
    (wasm, module)
}

fn index(m: &Module, name: &str) -> u32 {
    m.functions
        .iter()
        .find(|f| f.name.as_deref() == Some(name))
        .unwrap()
        .index
}

#[test]
fn call_graph_is_exact_for_direct_calls_and_typed_for_indirect_ones() {
    let (_, m) = parse(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/corpus/wat/indirect.wat"
        ))
        .unwrap(),
    );
    let names = |fs: &[u32]| {
        fs.iter()
            .map(|&f| m.functions[f as usize].name.clone().unwrap())
            .collect::<Vec<_>>()
    };
    // $apply calls through $ops with type $bin: every addressable (i32, i32) -> i32 function.
    assert_eq!(
        names(&m.call_graph.callees[index(&m, "apply") as usize]),
        ["add", "sub", "mul", "max"]
    );
    // $fold calls $apply directly and $uns with type $un.
    assert_eq!(
        names(&m.call_graph.direct[index(&m, "fold") as usize]),
        ["apply"]
    );
    assert_eq!(
        names(&m.call_graph.callees[index(&m, "fold") as usize]),
        ["neg", "double", "apply"],
        "sorted by index"
    );
    assert_eq!(
        m.call_graph.indirect_sites[index(&m, "fold") as usize].len(),
        1
    );
    let reach = names(&m.call_graph.reachable(index(&m, "fold")));
    assert_eq!(
        reach,
        ["add", "sub", "mul", "max", "neg", "double", "apply", "fold"]
    );
    assert_eq!(m.imports[0].class, ImportClass::Wasi);
    assert_eq!(m.elements.len(), 2);
    assert_eq!(m.tables.len(), 2);
}

#[test]
fn imports_are_classified() {
    let (_, m) = parse(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "not_a_wasi_function" (func))
            (import "wasi_unstable" "random_get" (func (param i32 i32) (result i32)))
            (import "env" "camera" (func))
            (import "env" "mem" (memory 1)))"#,
    );
    let classes: Vec<_> = m.imports.iter().map(|i| i.class).collect();
    use ImportClass::*;
    assert_eq!(classes, [Wasi, Other, Wasi, Other, Other]);
    assert_eq!(m.imported_functions, 4);
    assert!(m.memories[0].imported);
}

#[test]
fn names_resolve_by_name_demangled_form_and_index() {
    let (_, m) = parse(
        r#"(module
            (func $_ZN5probe6crunch17h0123456789abcdefE)
            (func $plain)
            (func $twice (param i32))
            (func $twice_too (param i64))
            (func (export "only_exported") (param f32)))"#,
    );
    assert_eq!(m.resolve_points(&["only_exported".into()]).unwrap(), [4]);
    assert_eq!(m.resolve_points(&["probe::crunch".into()]).unwrap(), [0]);
    assert_eq!(
        m.resolve_points(&["_ZN5probe6crunch17h0123456789abcdefE".into()])
            .unwrap(),
        [0]
    );
    assert_eq!(
        m.resolve_points(&["plain".into(), "#3".into(), "#1".into()])
            .unwrap(),
        [1, 3]
    );
    assert!(matches!(
        m.resolve_points(&["nope".into()]),
        Err(ModelError::UnknownFunction { .. })
    ));
    assert!(matches!(
        m.resolve_points(&["#5".into()]),
        Err(ModelError::NotAPoint { index: 5, .. })
    ));
    assert!(matches!(
        m.resolve_points(&["#x".into()]),
        Err(ModelError::UnknownFunction { .. })
    ));
}

#[test]
fn reference_typed_functions_cannot_be_points() {
    let (wasm, m) = parse(
        r#"(module
            (func $takes_ref (param funcref) (result i32) i32.const 0)
            (func $returns_ref (result externref) ref.null extern)
            (func $fine (param i32) (result i32) local.get 0))"#,
    );
    assert_eq!(m.all_points(), [2]);
    let err = rewrite(&m, &wasm, &[0]).unwrap_err();
    assert!(err.to_string().contains("reference-typed"), "{err}");
    assert!(m.resolve_points(&["returns_ref".into()]).is_err());
}

#[test]
fn reserved_names_are_refused() {
    let (wasm, m) = parse(r#"(module (func (export "__cc_local.0")))"#);
    let err = rewrite(&m, &wasm, &[0]).unwrap_err();
    assert!(matches!(err, ModelError::ReservedName { .. }), "{err}");
    // A module rewritten once is refused the second time.
    let (wasm, m) = parse(r#"(module (func $f (export "f")))"#);
    let once = rewrite(&m, &wasm, &[0]).unwrap();
    let again = Module::parse(&once.wasm).unwrap();
    assert!(matches!(
        rewrite(&again, &once.wasm, &[]),
        Err(ModelError::ReservedName { .. })
    ));
}

#[test]
fn modules_missing_sections_get_them() {
    // No imports, no globals, no exports, no memory; only functions and a start function.
    let (wasm, m) = parse(
        r#"(module
            (func $a (result i32) i32.const 7)
            (func $start (drop (call $a)))
            (start $start))"#,
    );
    for flags_set in [false, true] {
        let out = rewrite_with(&m, &wasm, &[0, 1], &RewriteConfig { flags_set }).unwrap();
        let new = Module::parse(&out.wasm).unwrap();
        assert_eq!(new.imports.len(), 2, "one migration import per type");
        assert_eq!(new.globals.len(), 1, "the bypass global, not one per point");
        assert_eq!(new.memories.len(), 1, "the flags");
        assert_eq!(new.tables.len(), 1, "the points");
        assert_eq!(
            new.start,
            Some(1 + 2),
            "the start function is still the start function, after the migration imports"
        );
    }
    // Host mode adds a data segment (the flags start set) after the module's own, which a
    // data count section must count.
    let (wasm, m) = parse(
        r#"(module
            (memory 1)
            (data $d "abc")
            (func $f (param i32) (memory.init $d (local.get 0) (i32.const 0) (i32.const 3)))
            (func $g (data.drop $d)))"#,
    );
    for flags_set in [false, true] {
        let out = rewrite_with(&m, &wasm, &[0, 1], &RewriteConfig { flags_set }).unwrap();
        let new = Module::parse(&out.wasm).unwrap();
        assert_eq!(new.memories.len(), 2);
    }
    // A module with no sections at all.
    let (wasm, m) = parse("(module)");
    let out = rewrite(&m, &wasm, &[]).unwrap();
    assert_eq!(Module::parse(&out.wasm).unwrap().functions.len(), 0);
}

#[test]
fn refuses_what_is_not_a_core_module() {
    assert!(matches!(Module::parse(b""), Err(ModelError::Empty)));
    assert!(matches!(
        Module::parse(b"(module)"),
        Err(ModelError::Text { .. })
    ));
    assert!(matches!(
        Module::parse(b"just text"),
        Err(ModelError::NotWasm { .. })
    ));
    assert!(matches!(
        Module::parse(b"\0asm\x01"),
        Err(ModelError::Truncated { .. })
    ));
    let component = wat::parse_str("(component)").unwrap();
    assert!(matches!(
        Module::parse(&component),
        Err(ModelError::Component { .. })
    ));
    let wasm = wat::parse_str("(module (func (export \"f\") (result i32) i32.const 1))").unwrap();
    assert!(matches!(
        Module::parse(&wasm[..wasm.len() - 3]),
        Err(ModelError::Truncated { .. })
    ));
    // Well-formed but invalid: the body leaves no value for its result.
    let mut bad = wasm.clone();
    let pos = bad.windows(2).rposition(|w| w == [0x41, 0x01]).unwrap();
    bad[pos] = 0x01; // i32.const 1 -> nop, nop
    bad[pos + 1] = 0x01;
    assert!(matches!(
        Module::parse(&bad),
        Err(ModelError::Invalid { .. })
    ));
}

#[test]
fn a_malformed_name_section_is_dropped_not_fatal() {
    let (mut wasm, _) = parse(r#"(module (func $f (export "f")))"#);
    // Append a custom section "name" whose function-names subsection claims more than it holds.
    let payload: &[u8] = &[4, b'n', b'a', b'm', b'e', 1, 5, 3, 0, 9];
    wasm.push(0);
    wasm.push(payload.len() as u8);
    wasm.extend_from_slice(payload);
    let m = Module::parse(&wasm).expect("custom sections do not make a module invalid");
    assert_eq!(
        m.functions[0].name.as_deref(),
        Some("f"),
        "the good name section still counts"
    );
    let out = rewrite(&m, &wasm, &[0]).unwrap();
    Module::parse(&out.wasm).unwrap();
}
