//! The master oracle: every corpus module run by `clonecloud run` (unmodified, and rewritten
//! with `--points all` in both point modes) must behave byte for byte like the unmodified
//! module run through the plain wasmtime API: stdout, stderr, exit code and the files written.

#[path = "../../../tests/support/corpus.rs"]
mod corpus;
#[path = "../../../tests/support/oracle.rs"]
mod oracle;

use std::path::Path;
use std::process::Command;

use corpus::{Guest, copy_dir, corpus, fixture_dir, snapshot_dir};

/// What a run of a guest looks like from outside.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    stdout: String,
    stderr: String,
    exit: i32,
    files: std::collections::BTreeMap<String, Vec<u8>>,
}

/// argv[0] both runs give the guest: the module path as written on the command line.
fn argv(guest: &Guest) -> Vec<String> {
    std::iter::once(guest.path.to_string_lossy().into_owned())
        .chain(guest.args.iter().cloned())
        .collect()
}

/// The oracle: the unmodified module on wasmtime + wasmtime-wasi, nothing of clonecloud.
fn oracle(guest: &Guest, data: &Path) -> Observed {
    let plain = oracle::run_plain(&guest.path, &argv(guest), &guest.env, data);
    Observed {
        stdout: String::from_utf8(plain.stdout).unwrap(),
        stderr: plain.stderr,
        exit: plain.exit,
        files: snapshot_dir(data),
    }
}

/// `clonecloud run [OPTIONS] module args...` as a user types it.
fn clonecloud(guest: &Guest, data: &Path, options: &[&str], home: &Path) -> Observed {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clonecloud"));
    cmd.arg("run")
        .args(options)
        .arg("--dir")
        .arg(format!("{}::/data", data.display()));
    for (k, v) in &guest.env {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    cmd.arg(&guest.path)
        .args(&guest.args)
        .env("CLONECLOUD_HOME", home)
        .env_remove("CLONECLOUD_LOG")
        .env_remove("RUST_LOG");
    let out = cmd.output().unwrap();
    Observed {
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
        exit: out
            .status
            .code()
            .expect("clonecloud was killed by a signal"),
        files: snapshot_dir(data),
    }
}

#[test]
fn every_corpus_module_behaves_like_plain_wasmtime() {
    let home = tempfile::tempdir().unwrap();
    // Offloading every function runs the whole program on an in-process clone (the first call
    // out of the host migrates, and everything below it runs there): files, output, exit code
    // and traps must all come back as if the program ran here.
    let configs: [&[&str]; 5] = [
        &[],
        &["--points", "all"],
        &["--points", "all", "--point-mode", "host"],
        &["--offload", "all"],
        &["--offload", "all", "--compression", "none"],
    ];
    let mut checked = 0;
    for guest in corpus() {
        let scratch = tempfile::tempdir().unwrap();
        let oracle_dir = scratch.path().join("oracle");
        copy_dir(&fixture_dir(), &oracle_dir);
        let expected = oracle(guest, &oracle_dir);
        for options in configs {
            // Twice: the second run loads the compiled module from the cache.
            for attempt in 0..2 {
                let dir = scratch
                    .path()
                    .join(format!("run-{}-{attempt}", options.join("_")));
                copy_dir(&fixture_dir(), &dir);
                let got = clonecloud(guest, &dir, options, home.path());
                assert_eq!(
                    got, expected,
                    "{} with {options:?} (attempt {attempt}) differs from plain wasmtime",
                    guest.name
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 8 * 3 * 2,
        "the corpus must have at least 8 modules"
    );
    // The cache really was used: one compiled artefact per distinct module.
    let cached = std::fs::read_dir(home.path().join("modules"))
        .unwrap()
        .count();
    // Plain, rewritten for flag mode, rewritten for host mode (which offloading uses too), and
    // that same rewrite compiled by the in-process clone's engine (it stops calls at deadlines).
    assert_eq!(
        cached,
        corpus().len() * 4,
        "each module and rewrite is compiled once per engine and cached"
    );
}

#[test]
fn oracle_sees_what_the_corpus_promises() {
    // Guards the oracle itself against a corpus that silently does nothing.
    let scratch = tempfile::tempdir().unwrap();
    let expect = |name: &str, exit: i32, stdout_has: &str| {
        let dir = scratch.path().join(name);
        copy_dir(&fixture_dir(), &dir);
        let seen = oracle(corpus::guest(name), &dir);
        assert_eq!(seen.exit, exit, "{name}: {seen:?}");
        assert!(
            seen.stdout.contains(stdout_has),
            "{name}: {:?}",
            seen.stdout
        );
        seen
    };
    expect("hello", 0, "hello from wasm");
    expect("args_env", 0, "arg[2]=\"two words\"");
    expect("args_env", 0, "CC_NUMBER squared: 144");
    let files = expect("files", 0, "bytes.bin is 70000 bytes");
    assert!(
        files.files.contains_key("out/report.txt") && !files.files.contains_key("remove-me.txt")
    );
    let fsops = expect("fsops", 0, "big: 100000 bytes, sum 12492401");
    for line in [
        "open missing: NotFound",
        "create_new existing: AlreadyExists",
        "remove_dir of a file: NotADirectory",
        "create_dir under missing: NotFound",
        "with a hole: [48, 49, 50, 97, 98, 99, 54, 55, 56, 57, 0, 0, 0, 0, 90]",
        "resized: [48, 49, 50, 97, 0, 0]",
        "old handle reads \"bee\"",
    ] {
        assert!(fsops.stdout.contains(line), "fsops: {line}: {}", fsops.stdout);
    }
    assert!(fsops.files["log.txt"].ends_with(b"one\ntwo\n"));
    expect("exit_code", 42, "about to exit with 42");
    let panic = expect("panic", 134, "10 / 2 = 5");
    assert!(panic.stderr.contains("division of 10 by zero"));
    expect("compute", 0, "primes below 20000: 2262");
    expect("textproc", 0, "\"number_sum\": 1999000");
    expect("deep", 0, "parsed depth 2000, digit sum 9000");
    expect("bare", 0, "");
    expect("multivalue", 2, "10309 30\n7 1234567890123 2750\n59\n");
    // Worked out independently (a Python model of the same fold).
    expect("indirect", 0, "ffffce9a\n00f4144c\n00000011\n");
}
