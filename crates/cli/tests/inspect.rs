//! `clonecloud inspect`: the JSON a script reads and the table a person reads, on a module whose
//! answers are known by construction (tests/corpus/wat/indirect.wat).

use std::process::Command;

fn inspect(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let wat = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/corpus/wat/indirect.wat"
    ))
    .unwrap();
    let path = dir.path().join("indirect.wasm");
    std::fs::write(&path, wat::parse_str(&wat).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clonecloud"))
        .arg("inspect")
        .args(args)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn json_describes_the_module() {
    let v: serde_json::Value = serde_json::from_str(&inspect(&["--json"])).unwrap();
    let functions = v["functions"].as_array().unwrap();
    assert_eq!(functions.len(), 11, "1 import + 10 defined");
    let f = |name: &str| {
        functions
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(f("fd_write")["imported"], true);
    assert_eq!(
        f("apply")["callees"],
        4,
        "the four (i32, i32) -> i32 functions in tables"
    );
    assert_eq!(
        f("fold")["callees"],
        3,
        "apply, and neg and double through $uns"
    );
    assert_eq!(f("fold")["indirect_call_sites"], 1);
    assert_eq!(f("add")["type"], "(i32, i32) -> (i32)");
    assert!(f("add")["body_size"].as_u64().unwrap() > 0);
    assert_eq!(v["imports"][0]["class"], "wasi");
    assert_eq!(v["imports"][0]["function"], 0);
    assert_eq!(v["memories"][0]["initial_pages"], 1);
    assert_eq!(v["tables"].as_array().unwrap().len(), 2);
    let exports: Vec<&str> = v["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(exports, ["memory", "_start"]);
}

#[test]
fn table_lists_every_function_with_its_callees() {
    let text = inspect(&[]);
    let row = |name: &str| {
        text.lines()
            .find(|l| l.ends_with(&format!("  {name}")))
            .unwrap_or_else(|| panic!("{name}:\n{text}"))
            .to_string()
    };
    assert!(
        row("apply").split_whitespace().nth(2) == Some("4"),
        "{}",
        row("apply")
    );
    assert!(row("fd_write").contains("import"));
    assert!(
        text.contains("wasi   func   wasi_snapshot_preview1.fd_write"),
        "{text}"
    );
}
