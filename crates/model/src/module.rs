//! The model of a core module: what `clonecloud inspect` shows and what the rewriter and the
//! analyzer work from.

use std::collections::HashMap;
use std::fmt;

use wasmparser::{
    BinaryReaderError, ElementItems, ElementKind, ExternalKind, KnownCustom, Name, Operator,
    Parser, Payload, RefType, TypeRef, ValType, Validator, WasmFeatures,
};

use crate::callgraph::{CallGraph, IndirectSite};
use crate::error::ModelError;
use crate::names::demangle;
use crate::wasi::is_wasi_p1;

/// A function signature. Only function types occur in the modules clonecloud accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FuncType {
    /// Parameter types, in order.
    pub params: Vec<ValType>,
    /// Result types, in order (several with multi-value).
    pub results: Vec<ValType>,
}

impl FuncType {
    /// Whether a parameter or result is a reference (funcref, externref, …): such values cannot
    /// be shipped to another machine, so such a function cannot be a migration point.
    pub fn has_references(&self) -> bool {
        self.params
            .iter()
            .chain(&self.results)
            .any(|t| matches!(t, ValType::Ref(_)))
    }
}

impl fmt::Display for FuncType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |ts: &[ValType]| {
            ts.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(f, "({}) -> ({})", list(&self.params), list(&self.results))
    }
}

/// What an import is for clonecloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImportClass {
    /// A known WASI preview 1 function (`wasi_snapshot_preview1` or `wasi_unstable`).
    Wasi,
    /// A function of the device API (`clonecloud_device`: camera, position, screen; see
    /// [`crate::device_api`]).
    Device,
    /// Anything else: an embedding host's function, or a non-function import.
    Other,
}

impl ImportClass {
    /// A short lower-case label: `wasi` or `other`.
    pub fn label(self) -> &'static str {
        match self {
            ImportClass::Wasi => "wasi",
            ImportClass::Device => "device",
            ImportClass::Other => "other",
        }
    }
}

/// The kind and type of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    /// A function of the given type index.
    Func {
        /// Index into [`Module::types`].
        type_index: u32,
    },
    /// A table.
    Table,
    /// A linear memory.
    Memory,
    /// A global.
    Global,
    /// An exception tag.
    Tag,
}

/// One import of the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// Module name (`wasi_snapshot_preview1`, `env`, …).
    pub module: String,
    /// Field name (`fd_write`, …).
    pub name: String,
    /// What is imported.
    pub kind: ImportKind,
    /// WASI preview 1 function or other.
    pub class: ImportClass,
}

/// Where a function's code lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    /// Provided by the host through the import with this index in [`Module::imports`].
    Imported {
        /// Index into [`Module::imports`].
        import: usize,
    },
    /// Defined in the module.
    Defined {
        /// Byte offset of the body (after its size field) in the module.
        body_offset: usize,
        /// Size of the body in bytes (locals and code).
        body_size: usize,
    },
}

/// One function of the function index space (imports first, then defined functions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// Index in the module's function index space.
    pub index: u32,
    /// Index into [`Module::types`].
    pub type_index: u32,
    /// The name from the `name` section, as stored there.
    pub name: Option<String>,
    /// Imported or defined.
    pub kind: FunctionKind,
}

impl Function {
    /// Whether the module defines this function (it has a body).
    pub fn is_defined(&self) -> bool {
        matches!(self.kind, FunctionKind::Defined { .. })
    }

    /// The body size in bytes, 0 for imports.
    pub fn body_size(&self) -> usize {
        match self.kind {
            FunctionKind::Defined { body_size, .. } => body_size,
            FunctionKind::Imported { .. } => 0,
        }
    }

    /// The name a person reads: demangled, or `#INDEX` when the module has no name for it.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(n) => demangle(n),
            None => format!("#{}", self.index),
        }
    }
}

/// The kind of an exported item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// A function.
    Func,
    /// A table.
    Table,
    /// A memory.
    Memory,
    /// A global.
    Global,
    /// An exception tag.
    Tag,
}

impl ExportKind {
    /// A short lower-case label.
    pub fn label(self) -> &'static str {
        match self {
            ExportKind::Func => "func",
            ExportKind::Table => "table",
            ExportKind::Memory => "memory",
            ExportKind::Global => "global",
            ExportKind::Tag => "tag",
        }
    }
}

/// One export of the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The exported name.
    pub name: String,
    /// What is exported.
    pub kind: ExportKind,
    /// Index in the index space of that kind.
    pub index: u32,
}

/// One global of the global index space (imports first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Global {
    /// Index in the global index space.
    pub index: u32,
    /// Value type.
    pub ty: ValType,
    /// Whether it can change (only mutable globals are part of the state that migrates).
    pub mutable: bool,
    /// Whether it is imported.
    pub imported: bool,
}

/// One table of the table index space (imports first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// Index in the table index space.
    pub index: u32,
    /// Element type.
    pub element: RefType,
    /// Initial size in elements.
    pub initial: u64,
    /// Maximum size in elements.
    pub maximum: Option<u64>,
    /// Whether it is imported.
    pub imported: bool,
}

/// One memory of the memory index space (imports first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Index in the memory index space.
    pub index: u32,
    /// Initial size in pages.
    pub initial: u64,
    /// Maximum size in pages.
    pub maximum: Option<u64>,
    /// Page size in bytes (65536 unless the custom-page-sizes proposal is used).
    pub page_size: u64,
    /// 64-bit addressing.
    pub memory64: bool,
    /// Shared between threads.
    pub shared: bool,
    /// Whether it is imported.
    pub imported: bool,
}

/// One element segment: the functions it can put into a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Index of the segment.
    pub index: u32,
    /// The table an active segment initialises; `None` for passive and declared segments.
    pub table: Option<u32>,
    /// The functions the segment names (`ref.null` entries are left out).
    pub functions: Vec<u32>,
}

/// A parsed and validated core module.
#[derive(Debug, Clone)]
pub struct Module {
    /// Size of the module in bytes.
    pub size: usize,
    /// The type section (function types).
    pub types: Vec<FuncType>,
    /// Imports, in order.
    pub imports: Vec<Import>,
    /// The function index space: imported functions first, then defined ones.
    pub functions: Vec<Function>,
    /// Exports, in order.
    pub exports: Vec<Export>,
    /// The global index space.
    pub globals: Vec<Global>,
    /// The table index space.
    pub tables: Vec<Table>,
    /// The memory index space.
    pub memories: Vec<Memory>,
    /// Element segments.
    pub elements: Vec<Element>,
    /// The start function, if any.
    pub start: Option<u32>,
    /// Size of the code section in bytes.
    pub code_size: usize,
    /// Who calls whom (empty from [`Module::parse_without_call_graph`]).
    pub call_graph: CallGraph,
    /// Number of imported functions (the first defined function's index).
    pub imported_functions: u32,
    /// The functions that change a table (`table.set`, `grow`, `fill`, `copy`, `init`,
    /// `elem.drop`), sorted (empty from [`Module::parse_without_call_graph`]).
    pub table_mutators: Vec<u32>,
    /// The size of the tag index space (exception tags, imported ones first).
    pub tags: u32,
}

impl Module {
    /// Parses and validates `wasm`, a binary core module. Empty input, text, components,
    /// truncated and invalid modules are refused with an error that says what was found.
    pub fn parse(wasm: &[u8]) -> Result<Module, ModelError> {
        Module::parse_with(wasm, true)
    }

    /// Parses and validates `wasm` like [`Module::parse`], but does not read the function bodies:
    /// [`Module::call_graph`] and [`Module::table_mutators`] are left empty. This is what running
    /// and rewriting a module need, in time linear in the module; the call graph, which an
    /// indirect call makes as large as the functions times the addressable functions of its
    /// type, is for the analyzer.
    pub fn parse_without_call_graph(wasm: &[u8]) -> Result<Module, ModelError> {
        Module::parse_with(wasm, false)
    }

    fn parse_with(wasm: &[u8], call_graph: bool) -> Result<Module, ModelError> {
        check_header(wasm)?;
        Validator::new_with_features(WasmFeatures::default())
            .validate_all(wasm)
            .map_err(|e| ModelError::from_parser(&e, wasm.len()))?;
        parse_validated(wasm, call_graph).map_err(|e| match e {
            ParseFail::Reader(e) => ModelError::from_parser(&e, wasm.len()),
            ParseFail::Model(e) => e,
        })
    }

    /// The type of function `index`.
    pub fn func_type(&self, index: u32) -> &FuncType {
        &self.types[self.functions[index as usize].type_index as usize]
    }

    /// The defined functions.
    pub fn defined_functions(&self) -> impl Iterator<Item = &Function> {
        self.functions[self.imported_functions as usize..].iter()
    }

    /// Checks that function `index` can be a migration point: it exists, is defined in the
    /// module, and its type has no reference-typed parameters or results.
    pub fn check_point(&self, index: u32) -> Result<(), ModelError> {
        let Some(f) = self.functions.get(index as usize) else {
            return Err(ModelError::NotAPoint {
                index,
                reason: format!("the module has only {} functions", self.functions.len()),
            });
        };
        if !f.is_defined() {
            let import = match f.kind {
                FunctionKind::Imported { import } => &self.imports[import],
                FunctionKind::Defined { .. } => unreachable!(),
            };
            return Err(ModelError::NotAPoint {
                index,
                reason: format!(
                    "it is the import `{}`.`{}`, not a function the module defines",
                    import.module, import.name
                ),
            });
        }
        let ty = self.func_type(index);
        if ty.has_references() {
            return Err(ModelError::NotAPoint {
                index,
                reason: format!(
                    "its type {ty} has reference-typed params or results, which cannot be \
                     shipped to a clone"
                ),
            });
        }
        Ok(())
    }

    /// The fixed addresses in memory 0 function `index` loads from or stores to (`i32.const A`
    /// followed by an access at offset `O` gives `A + O`), sorted and deduplicated: where the
    /// statics it uses live. Empty for imports and for bodies `wasm` does not hold.
    pub fn static_addresses(&self, wasm: &[u8], index: u32) -> Vec<u32> {
        let Some(Function { kind: FunctionKind::Defined { body_offset, body_size }, .. }) = self.functions.get(index as usize) else {
            return Vec::new();
        };
        let Some(bytes) = wasm.get(*body_offset..body_offset + body_size) else { return Vec::new() };
        let body = wasmparser::FunctionBody::new(wasmparser::BinaryReader::new(bytes, *body_offset));
        let Ok(mut ops) = body.get_operators_reader() else { return Vec::new() };
        let mut out = Vec::new();
        let mut constant: Option<u32> = None;
        while !ops.eof() {
            let Ok(op) = ops.read() else { break };
            let memarg = match &op {
                Operator::I32Load { memarg }
                | Operator::I64Load { memarg }
                | Operator::I32Load8U { memarg }
                | Operator::I32Load8S { memarg }
                | Operator::I32Load16U { memarg }
                | Operator::I32Load16S { memarg }
                | Operator::I32Store { memarg }
                | Operator::I64Store { memarg }
                | Operator::I32Store8 { memarg }
                | Operator::I32Store16 { memarg } => Some(memarg),
                _ => None,
            }
            // Memory 0's: a rewritten module's points read their flags from a memory of their own.
            .filter(|m| m.memory == 0)
            .map(|m| m.offset);
            if let (Some(base), Some(offset)) = (constant, memarg)
                && let Ok(a) = u32::try_from(u64::from(base) + offset)
            {
                out.push(a);
            }
            constant = match op {
                Operator::I32Const { value } => Some(value as u32),
                _ => None,
            };
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Every function that can be a migration point (defined, no reference types), in order.
    pub fn all_points(&self) -> Vec<u32> {
        self.defined_functions()
            .map(|f| f.index)
            .filter(|&i| self.check_point(i).is_ok())
            .collect()
    }

    /// Resolves user-given function names to indices: each NAME is the function's name in the
    /// `name` section, its demangled form (`probe::crunch`), an export name, or `#INDEX`. A name that several
    /// functions share (generic instances) selects all of them. The result is sorted and
    /// deduplicated, and every function in it passes [`Module::check_point`].
    pub fn resolve_points(&self, names: &[String]) -> Result<Vec<u32>, ModelError> {
        // Names from the `name` section and their demangled forms first; export names only
        // where no function is so named (a stripped module still has its exports).
        let mut by_name: HashMap<&str, Vec<u32>> = HashMap::new();
        let demangled: Vec<(u32, String)> = self
            .functions
            .iter()
            .filter_map(|f| f.name.as_deref().map(|n| (f.index, demangle(n))))
            .collect();
        for f in &self.functions {
            if let Some(n) = &f.name {
                by_name.entry(n.as_str()).or_default().push(f.index);
            }
        }
        for (i, d) in &demangled {
            by_name.entry(d.as_str()).or_default().push(*i);
        }
        for e in self.exports.iter().filter(|e| e.kind == ExportKind::Func) {
            by_name
                .entry(e.name.as_str())
                .or_insert_with(|| vec![e.index]);
        }
        // A C++ function also by its name without the parameter list (`luaD_throw` for
        // `luaD_throw(lua_State*, int)`): every overload of it.
        let mut by_base: HashMap<&str, Vec<u32>> = HashMap::new();
        for (i, d) in &demangled {
            if let Some(base) = without_parameters(d) {
                by_base.entry(base).or_default().push(*i);
            }
        }
        let mut out = Vec::new();
        for name in names {
            let name = name.trim();
            if let Some(digits) = name.strip_prefix('#') {
                let index: u32 = digits.parse().map_err(|_| ModelError::UnknownFunction {
                    name: name.to_string(),
                })?;
                self.check_point(index)?;
                out.push(index);
                continue;
            }
            match by_name.get(name).or_else(|| by_base.get(name)) {
                Some(found) => {
                    for &i in found {
                        self.check_point(i)?;
                        out.push(i);
                    }
                }
                None => {
                    return Err(ModelError::UnknownFunction {
                        name: name.to_string(),
                    });
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The exports that name function `index`.
    pub fn exports_of(&self, index: u32) -> impl Iterator<Item = &Export> {
        self.exports
            .iter()
            .filter(move |e| e.kind == ExportKind::Func && e.index == index)
    }
}

/// Refuses what is not a binary core module, saying what it is instead.
fn check_header(wasm: &[u8]) -> Result<(), ModelError> {
    if wasm.is_empty() {
        return Err(ModelError::Empty);
    }
    if !wasm.starts_with(b"\0asm") {
        let head = &wasm[..wasm.len().min(64)];
        let text = std::str::from_utf8(head).ok().or_else(|| {
            // A multi-byte character may be cut at 64 bytes: accept a valid prefix.
            std::str::from_utf8(&head[..head.len().saturating_sub(3)]).ok()
        });
        return Err(match text {
            Some(t) if looks_like_wat(t) => ModelError::Text {
                start: first_line(t),
            },
            Some(t) if t.chars().all(|c| !c.is_control() || c.is_whitespace()) => {
                ModelError::NotWasm {
                    found: format!("text starting with `{}`", first_line(t)),
                }
            }
            _ => ModelError::NotWasm {
                found: format!(
                    "the bytes {}",
                    wasm.iter()
                        .take(8)
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            },
        });
    }
    if wasm.len() < 8 {
        return Err(ModelError::Truncated {
            size: wasm.len(),
            offset: 4,
            message: "the 8-byte header is incomplete".into(),
        });
    }
    let version = u16::from_le_bytes([wasm[4], wasm[5]]);
    let layer = u16::from_le_bytes([wasm[6], wasm[7]]);
    if layer != 0 {
        return Err(ModelError::Component { layer });
    }
    if version != 1 {
        return Err(ModelError::Invalid {
            offset: 4,
            message: format!("unknown binary version {version} (only version 1 exists)"),
        });
    }
    Ok(())
}

fn looks_like_wat(text: &str) -> bool {
    let t = text.trim_start_matches('\u{feff}').trim_start();
    t.starts_with("(module")
        || t.starts_with("(component")
        || t.starts_with(";;")
        || t.starts_with("(;")
}

fn first_line(text: &str) -> String {
    let line = text.trim_start().lines().next().unwrap_or("");
    let mut s: String = line.chars().take(40).collect();
    if line.chars().count() > 40 {
        s.push('…');
    }
    s
}

enum ParseFail {
    Reader(BinaryReaderError),
    Model(ModelError),
}

impl From<BinaryReaderError> for ParseFail {
    fn from(e: BinaryReaderError) -> Self {
        ParseFail::Reader(e)
    }
}

fn parse_validated(wasm: &[u8], call_graph: bool) -> Result<Module, ParseFail> {
    let mut m = Module {
        size: wasm.len(),
        types: Vec::new(),
        imports: Vec::new(),
        functions: Vec::new(),
        exports: Vec::new(),
        globals: Vec::new(),
        tables: Vec::new(),
        memories: Vec::new(),
        elements: Vec::new(),
        start: None,
        code_size: 0,
        call_graph: CallGraph::default(),
        imported_functions: 0,
        table_mutators: Vec::new(),
        tags: 0,
    };
    let mut bodies: Vec<wasmparser::FunctionBody<'_>> = Vec::new();
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut ref_funcs: Vec<u32> = Vec::new();

    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::TypeSection(reader) => {
                for ty in reader.into_iter_err_on_gc_types() {
                    let ty = ty?;
                    m.types.push(FuncType {
                        params: ty.params().to_vec(),
                        results: ty.results().to_vec(),
                    });
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import?;
                    let (kind, class) = match import.ty {
                        TypeRef::Func(type_index) | TypeRef::FuncExact(type_index) => {
                            m.functions.push(Function {
                                index: m.functions.len() as u32,
                                type_index,
                                name: None,
                                kind: FunctionKind::Imported {
                                    import: m.imports.len(),
                                },
                            });
                            let class = if is_wasi_p1(import.module, import.name) {
                                ImportClass::Wasi
                            } else if crate::device_api::is_device_api(import.module, import.name) {
                                ImportClass::Device
                            } else {
                                ImportClass::Other
                            };
                            (ImportKind::Func { type_index }, class)
                        }
                        TypeRef::Table(t) => {
                            m.tables.push(table(m.tables.len() as u32, &t, true));
                            (ImportKind::Table, ImportClass::Other)
                        }
                        TypeRef::Memory(t) => {
                            m.memories.push(memory(m.memories.len() as u32, &t, true));
                            (ImportKind::Memory, ImportClass::Other)
                        }
                        TypeRef::Global(t) => {
                            m.globals.push(Global {
                                index: m.globals.len() as u32,
                                ty: t.content_type,
                                mutable: t.mutable,
                                imported: true,
                            });
                            (ImportKind::Global, ImportClass::Other)
                        }
                        TypeRef::Tag(_) => {
                            m.tags += 1;
                            (ImportKind::Tag, ImportClass::Other)
                        }
                    };
                    m.imports.push(Import {
                        module: import.module.to_string(),
                        name: import.name.to_string(),
                        kind,
                        class,
                    });
                }
                m.imported_functions = m.functions.len() as u32;
            }
            Payload::FunctionSection(reader) => {
                for type_index in reader {
                    m.functions.push(Function {
                        index: m.functions.len() as u32,
                        type_index: type_index?,
                        name: None,
                        // Filled in by the code section.
                        kind: FunctionKind::Defined {
                            body_offset: 0,
                            body_size: 0,
                        },
                    });
                }
            }
            Payload::TableSection(reader) => {
                for t in reader {
                    m.tables.push(table(m.tables.len() as u32, &t?.ty, false));
                }
            }
            Payload::MemorySection(reader) => {
                for mem in reader {
                    m.memories
                        .push(memory(m.memories.len() as u32, &mem?, false));
                }
            }
            Payload::GlobalSection(reader) => {
                for global in reader {
                    let global = global?;
                    collect_ref_funcs(global.init_expr.get_operators_reader(), &mut ref_funcs)?;
                    m.globals.push(Global {
                        index: m.globals.len() as u32,
                        ty: global.ty.content_type,
                        mutable: global.ty.mutable,
                        imported: false,
                    });
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export?;
                    let kind = match export.kind {
                        ExternalKind::Func | ExternalKind::FuncExact => ExportKind::Func,
                        ExternalKind::Table => ExportKind::Table,
                        ExternalKind::Memory => ExportKind::Memory,
                        ExternalKind::Global => ExportKind::Global,
                        ExternalKind::Tag => ExportKind::Tag,
                    };
                    m.exports.push(Export {
                        name: export.name.to_string(),
                        kind,
                        index: export.index,
                    });
                }
            }
            Payload::TagSection(reader) => m.tags += reader.count(),
            Payload::StartSection { func, .. } => m.start = Some(func),
            Payload::ElementSection(reader) => {
                for element in reader {
                    let element = element?;
                    let table = match element.kind {
                        ElementKind::Active { table_index, .. } => Some(table_index.unwrap_or(0)),
                        ElementKind::Passive | ElementKind::Declared => None,
                    };
                    let mut functions = Vec::new();
                    match element.items {
                        ElementItems::Functions(reader) => {
                            for f in reader {
                                functions.push(f?);
                            }
                        }
                        ElementItems::Expressions(_, reader) => {
                            for expr in reader {
                                collect_ref_funcs(expr?.get_operators_reader(), &mut functions)?;
                            }
                        }
                    }
                    m.elements.push(Element {
                        index: m.elements.len() as u32,
                        table,
                        functions,
                    });
                }
            }
            Payload::CodeSectionStart { size, .. } => m.code_size = size as usize,
            Payload::CodeSectionEntry(body) => bodies.push(body),
            Payload::CustomSection(section) => {
                if let KnownCustom::Name(reader) = section.as_known() {
                    // A malformed name section is not fatal: names are only for people.
                    for sub in reader.into_iter().flatten() {
                        if let Name::Function(map) = sub {
                            for naming in map.into_iter().flatten() {
                                names.insert(naming.index, naming.name.to_string());
                            }
                        }
                    }
                }
            }
            Payload::Version {
                encoding: wasmparser::Encoding::Component,
                ..
            } => {
                return Err(ParseFail::Model(ModelError::Component { layer: 1 }));
            }
            _ => {}
        }
    }

    let imported = m.imported_functions as usize;
    for (i, body) in bodies.iter().enumerate() {
        let range = body.range();
        m.functions[imported + i].kind = FunctionKind::Defined {
            body_offset: range.start,
            body_size: range.end - range.start,
        };
    }
    for f in &mut m.functions {
        f.name = names.remove(&f.index);
    }
    if !call_graph {
        return Ok(m);
    }
    let mut direct = vec![Vec::new(); m.functions.len()];
    let mut sites = vec![Vec::new(); m.functions.len()];
    for (i, body) in bodies.iter().enumerate() {
        let index = imported + i;
        let mut ops = body.get_operators_reader()?;
        while !ops.eof() {
            match ops.read()? {
                Operator::Call { function_index } | Operator::ReturnCall { function_index } => {
                    direct[index].push(function_index)
                }
                Operator::CallIndirect {
                    type_index,
                    table_index,
                }
                | Operator::ReturnCallIndirect {
                    type_index,
                    table_index,
                } => sites[index].push(IndirectSite {
                    type_index,
                    table: Some(table_index),
                }),
                Operator::CallRef { type_index } | Operator::ReturnCallRef { type_index } => {
                    sites[index].push(IndirectSite {
                        type_index,
                        table: None,
                    })
                }
                Operator::RefFunc { function_index } => ref_funcs.push(function_index),
                Operator::TableSet { .. }
                | Operator::TableGrow { .. }
                | Operator::TableFill { .. }
                | Operator::TableCopy { .. }
                | Operator::TableInit { .. }
                | Operator::ElemDrop { .. } => {
                    if m.table_mutators.last() != Some(&(index as u32)) {
                        m.table_mutators.push(index as u32);
                    }
                }
                _ => {}
            }
        }
    }
    let mut addressable: Vec<u32> = m
        .elements
        .iter()
        .flat_map(|e| e.functions.iter().copied())
        .collect();
    addressable.extend(ref_funcs);
    m.call_graph = CallGraph::build(&m, direct, sites, addressable);
    Ok(m)
}

fn table(index: u32, t: &wasmparser::TableType, imported: bool) -> Table {
    Table {
        index,
        element: t.element_type,
        initial: t.initial,
        maximum: t.maximum,
        imported,
    }
}

fn memory(index: u32, t: &wasmparser::MemoryType, imported: bool) -> Memory {
    Memory {
        index,
        initial: t.initial,
        maximum: t.maximum,
        page_size: t.page_size_log2.map_or(65536, |l| 1u64 << l),
        memory64: t.memory64,
        shared: t.shared,
        imported,
    }
}

fn collect_ref_funcs(
    mut ops: wasmparser::OperatorsReader<'_>,
    out: &mut Vec<u32>,
) -> Result<(), BinaryReaderError> {
    while !ops.eof() {
        if let Operator::RefFunc { function_index } = ops.read()? {
            out.push(function_index);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Module;

    #[test]
    fn a_cxx_function_is_found_by_its_name_without_parameters() {
        // wasm-ld writes C++ names demangled, with their parameters, into the name section.
        let wasm = wat::parse_str(
            r#"(module
                (func $"luaD_throw(lua_State*, int)" (param i32 i32))
                (func $"f(int)" (param i32))
                (func $"f(double)" (param f64))
                (func $f_exact))"#,
        )
        .unwrap();
        let m = Module::parse(&wasm).unwrap();
        assert_eq!(m.resolve_points(&["luaD_throw".into()]).unwrap(), vec![0]);
        assert_eq!(m.resolve_points(&["luaD_throw(lua_State*, int)".into()]).unwrap(), vec![0]);
        // Every overload.
        assert_eq!(m.resolve_points(&["f".into()]).unwrap(), vec![1, 2]);
        assert!(m.resolve_points(&["luaD".into()]).is_err());
        assert_eq!(super::without_parameters("std::map<int, char>::at(int) const"), Some("std::map<int, char>::at"));
        assert_eq!(super::without_parameters("plain"), None);
    }

    #[test]
    fn a_module_without_its_call_graph_is_the_same_module() {
        let wasm = wat::parse_str(
            r#"(module
                (type $t (func (result i32)))
                (table 2 funcref)
                (elem (i32.const 0) $a $b)
                (func $a (result i32) i32.const 0 call_indirect (type $t))
                (func $b (result i32) call $a)
                (export "a" (func $a)))"#,
        )
        .unwrap();
        let full = Module::parse(&wasm).unwrap();
        let light = Module::parse_without_call_graph(&wasm).unwrap();
        assert_eq!(light.functions, full.functions);
        assert_eq!(light.exports, full.exports);
        assert_eq!(light.elements, full.elements);
        assert_eq!(light.types, full.types);
        assert!(light.call_graph.callees.is_empty() && !full.call_graph.callees.is_empty());
    }
}

/// A demangled C++ name without its parameter list (and what follows it, e.g. `const`): the
/// part before the first `(` outside `<…>`. `None` when it has none.
fn without_parameters(name: &str) -> Option<&str> {
    let mut depth = 0i32;
    for (at, ch) in name.char_indices() {
        match ch {
            '<' => depth += 1,
            '>' => depth -= 1,
            '(' if depth == 0 && at > 0 => return Some(&name[..at]),
            _ => {}
        }
    }
    None
}
