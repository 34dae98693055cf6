//! `clonecloud inspect`: the module model, as a table or as JSON.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use clonecloud_model::{FunctionKind, Module};
use serde::Serialize;

/// Show a module's functions, imports (and their class), exports, memories and globals.
#[derive(Debug, Args)]
pub struct Opts {
    /// The module to inspect.
    module: PathBuf,
    /// Print JSON (for scripts) instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    size: usize,
    code_size: usize,
    functions: Vec<FunctionRow>,
    imports: Vec<ImportRow>,
    exports: Vec<ExportRow>,
    memories: Vec<MemoryRow>,
    globals: Vec<GlobalRow>,
    tables: Vec<TableRow>,
    start: Option<u32>,
}

#[derive(Serialize)]
struct FunctionRow {
    index: u32,
    name: Option<String>,
    demangled: Option<String>,
    imported: bool,
    #[serde(rename = "type")]
    ty: String,
    body_size: usize,
    callees: usize,
    indirect_call_sites: usize,
    can_be_point: bool,
}

#[derive(Serialize)]
struct ImportRow {
    module: String,
    name: String,
    kind: &'static str,
    class: &'static str,
    function: Option<u32>,
}

#[derive(Serialize)]
struct ExportRow {
    name: String,
    kind: &'static str,
    index: u32,
}

#[derive(Serialize)]
struct MemoryRow {
    index: u32,
    initial_pages: u64,
    maximum_pages: Option<u64>,
    page_size: u64,
    memory64: bool,
    shared: bool,
    imported: bool,
}

#[derive(Serialize)]
struct GlobalRow {
    index: u32,
    #[serde(rename = "type")]
    ty: String,
    mutable: bool,
    imported: bool,
}

#[derive(Serialize)]
struct TableRow {
    index: u32,
    element: String,
    initial: u64,
    maximum: Option<u64>,
    imported: bool,
}

pub fn run(opts: Opts) -> anyhow::Result<ExitCode> {
    let wasm = crate::read_module(&opts.module)?;
    let module = Module::parse(&wasm)
        .with_context(|| format!("cannot inspect `{}`", opts.module.display()))?;
    let report = report(&module);
    let mut out = std::io::stdout().lock();
    if opts.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_tables(&mut out, &opts.module, &report)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn report(m: &Module) -> Report {
    let mut import_function = std::collections::HashMap::new();
    for f in &m.functions {
        if let FunctionKind::Imported { import } = f.kind {
            import_function.insert(import, f.index);
        }
    }
    Report {
        size: m.size,
        code_size: m.code_size,
        functions: m
            .functions
            .iter()
            .map(|f| FunctionRow {
                index: f.index,
                name: f.name.clone(),
                demangled: f.name.as_ref().map(|n| clonecloud_model::demangle(n)),
                imported: !f.is_defined(),
                ty: m.func_type(f.index).to_string(),
                body_size: f.body_size(),
                callees: m.call_graph.callees[f.index as usize].len(),
                indirect_call_sites: m.call_graph.indirect_sites[f.index as usize].len(),
                can_be_point: m.check_point(f.index).is_ok(),
            })
            .collect(),
        imports: m
            .imports
            .iter()
            .enumerate()
            .map(|(i, imp)| ImportRow {
                module: imp.module.clone(),
                name: imp.name.clone(),
                kind: match imp.kind {
                    clonecloud_model::ImportKind::Func { .. } => "func",
                    clonecloud_model::ImportKind::Table => "table",
                    clonecloud_model::ImportKind::Memory => "memory",
                    clonecloud_model::ImportKind::Global => "global",
                    clonecloud_model::ImportKind::Tag => "tag",
                },
                class: imp.class.label(),
                function: import_function.get(&i).copied(),
            })
            .collect(),
        exports: m
            .exports
            .iter()
            .map(|e| ExportRow {
                name: e.name.clone(),
                kind: e.kind.label(),
                index: e.index,
            })
            .collect(),
        memories: m
            .memories
            .iter()
            .map(|mem| MemoryRow {
                index: mem.index,
                initial_pages: mem.initial,
                maximum_pages: mem.maximum,
                page_size: mem.page_size,
                memory64: mem.memory64,
                shared: mem.shared,
                imported: mem.imported,
            })
            .collect(),
        globals: m
            .globals
            .iter()
            .map(|g| GlobalRow {
                index: g.index,
                ty: g.ty.to_string(),
                mutable: g.mutable,
                imported: g.imported,
            })
            .collect(),
        tables: m
            .tables
            .iter()
            .map(|t| TableRow {
                index: t.index,
                element: t.element.to_string(),
                initial: t.initial,
                maximum: t.maximum,
                imported: t.imported,
            })
            .collect(),
        start: m.start,
    }
}

fn print_tables(out: &mut impl Write, path: &std::path::Path, r: &Report) -> std::io::Result<()> {
    let defined = r.functions.iter().filter(|f| !f.imported).count();
    writeln!(
        out,
        "module   {} ({} bytes, code section {} bytes)",
        path.display(),
        r.size,
        r.code_size
    )?;
    writeln!(
        out,
        "functions {} ({} imported, {} defined)",
        r.functions.len(),
        r.functions.len() - defined,
        defined
    )?;
    if let Some(s) = r.start {
        writeln!(out, "start    #{s}")?;
    }

    writeln!(out, "\nmemories")?;
    if r.memories.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for m in &r.memories {
        let max = m
            .maximum_pages
            .map_or("none".to_string(), |p| p.to_string());
        writeln!(
            out,
            "  #{:<3} initial {} pages, maximum {}, page size {}{}{}{}",
            m.index,
            m.initial_pages,
            max,
            m.page_size,
            if m.memory64 { ", 64-bit" } else { "" },
            if m.shared { ", shared" } else { "" },
            if m.imported { ", imported" } else { "" },
        )?;
    }

    writeln!(out, "\nglobals")?;
    if r.globals.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for g in &r.globals {
        writeln!(
            out,
            "  #{:<3} {:<4} {}{}",
            g.index,
            g.ty,
            if g.mutable { "mutable" } else { "immutable" },
            if g.imported { ", imported" } else { "" }
        )?;
    }

    writeln!(out, "\nimports")?;
    if r.imports.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for i in &r.imports {
        let idx = i.function.map_or(String::new(), |f| format!("#{f}"));
        writeln!(
            out,
            "  {:<6} {:<6} {:<6} {}.{}",
            idx, i.class, i.kind, i.module, i.name
        )?;
    }

    writeln!(out, "\nexports")?;
    if r.exports.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for e in &r.exports {
        writeln!(out, "  {:<7} #{:<6} {}", e.kind, e.index, e.name)?;
    }

    writeln!(out, "\nfunctions")?;
    writeln!(out, "  {:>6} {:>8} {:>7}  name", "index", "size", "callees")?;
    for f in &r.functions {
        let name = f
            .demangled
            .clone()
            .unwrap_or_else(|| format!("#{}", f.index));
        let size = if f.imported {
            "import".to_string()
        } else {
            f.body_size.to_string()
        };
        writeln!(
            out,
            "  {:>6} {:>8} {:>7}  {}",
            f.index, size, f.callees, name
        )?;
    }
    Ok(())
}
