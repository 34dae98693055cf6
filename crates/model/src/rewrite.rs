//! The rewriter: turns chosen functions into CloneCloud migration points.
//!
//! For points `P = {f_0 < f_1 < … < f_{k-1}}` (original function indices) of a module with `N`
//! imported and `D` defined functions, the new function index space is
//!
//! ```text
//! [ N imports | k imports clonecloud.migrate.<f_j> | D defined (points are now stubs) | k original bodies | N import trampolines ]
//! ```
//!
//! so an original index `f >= N` becomes `f + k`, and every caller, table entry, export and the
//! start function keep reaching the same slot, which for a point now holds the stub:
//!
//! ```text
//! (func $f_j (type t)            ;; same type as before
//!   global.get $__cc_flag.<f_j>  ;; exported mutable i32, 0 at start
//!   if
//!     local.get 0 … local.get n-1
//!     call $clonecloud.migrate.<f_j>   ;; the host decides: offload, or call the body back
//!     return
//!   end
//!   local.get 0 … local.get n-1
//!   return_call $body_j)         ;; fast path: a tail call, so no extra frame stays on the stack
//! ```
//!
//! Exports added (all under [`RESERVED_PREFIX`]): `__cc_local.<f>` (the original body),
//! `__cc_flag.<f>` (the point's flag), `__cc_global.<g>` (every mutable global),
//! `__cc_memory.<m>` (every memory) and `__cc_import.<i>` (a trampoline that calls function
//! import `i`, so a clone can proxy a WASI call into the device's instance). `.debug_*` and other
//! offset-bearing custom sections are dropped; the `name` section is kept and remapped.

use std::borrow::Cow;
use std::collections::HashMap;

use wasm_encoder::reencode::{Error as ReError, Reencode, utils};
use wasm_encoder::{
    CodeSection, ConstExpr, EntityType, ExportSection, FunctionSection, GlobalSection,
    ImportSection, IndirectNameMap, NameMap, NameSection, SectionId,
};
use wasmparser::{BinaryReader, FunctionBody, Parser, Validator, WasmFeatures};

use crate::error::ModelError;
use crate::module::{FunctionKind, Module};

/// Every export name the rewriter adds starts with this prefix; a module that already exports
/// such a name is refused.
pub const RESERVED_PREFIX: &str = "__cc_";
/// The import module of the migration imports.
pub const IMPORT_MODULE: &str = "clonecloud";

/// One migration point in a rewritten module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrittenPoint {
    /// The function's index in the original module.
    pub function: u32,
    /// Its type index (the same in both modules).
    pub type_index: u32,
    /// Index of the stub in the rewritten module (the function's old slot, shifted).
    pub stub: u32,
    /// Index of the original body in the rewritten module.
    pub body: u32,
    /// Field name of the migration import in module [`IMPORT_MODULE`]: `migrate.<function>`.
    pub import: String,
    /// Export name of the original body: `__cc_local.<function>`.
    pub local_export: String,
    /// Export name of the flag global: `__cc_flag.<function>`.
    pub flag_export: String,
}

/// Where the rewriter puts things for a given module and point set, without the new module's
/// bytes: what a host needs to drive a rewritten module it already has compiled (a cached one).
/// [`rewrite_layout`] computes it in time linear in the number of points, functions and globals;
/// [`rewrite_with`] returns the same values in its [`Rewritten`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteLayout {
    /// The migration points, in order of original index.
    pub points: Vec<RewrittenPoint>,
    /// `(global index, export name)` of every mutable global.
    pub globals: Vec<(u32, String)>,
    /// `(memory index, export name)` of every memory.
    pub memories: Vec<(u32, String)>,
    /// `(function index of the import, export name)` of every import trampoline.
    pub trampolines: Vec<(u32, String)>,
}

/// Identifies this rewriter's output scheme: a cache that keys rewritten modules by their input
/// (the original module, the points and the [`RewriteConfig`]) rather than by their bytes must
/// fold it into its key. It is derived from the rewriter's and the module model's source at
/// compile time (and a format number), so any change to them makes it differ.
pub const REWRITE_FINGERPRINT: u64 = fnv1a(
    include_bytes!("rewrite.rs"),
    fnv1a(include_bytes!("module.rs"), 1),
);

const fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// A rewritten module and where the rewriter put things.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// The new module; it validates.
    pub wasm: Vec<u8>,
    /// The migration points, in order of original index.
    pub points: Vec<RewrittenPoint>,
    /// `(global index, export name)` of every mutable global.
    pub globals: Vec<(u32, String)>,
    /// `(memory index, export name)` of every memory.
    pub memories: Vec<(u32, String)>,
    /// `(function index of the import, export name)` of every import trampoline.
    pub trampolines: Vec<(u32, String)>,
}

/// Options of the rewrite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteConfig {
    /// The initial value of every flag: `false` (0) sends calls to the local body until the host
    /// sets a flag; `true` (1) sends every call to the host from the start, calls made by the
    /// start function included.
    pub flags_set: bool,
}

/// Rewrites `wasm` (which `module` models) so that each function in `points` is a migration
/// point, with every flag initially clear. See [`rewrite_with`].
pub fn rewrite(module: &Module, wasm: &[u8], points: &[u32]) -> Result<Rewritten, ModelError> {
    rewrite_with(module, wasm, points, &RewriteConfig::default())
}

/// Rewrites `wasm` (which `module` models) so that each function in `points` is a migration
/// point. `points` need not be sorted; each must pass [`Module::check_point`]. An empty set
/// still adds the state exports and trampolines. The output validates.
pub fn rewrite_with(
    module: &Module,
    wasm: &[u8],
    points: &[u32],
    config: &RewriteConfig,
) -> Result<Rewritten, ModelError> {
    let RewriteLayout {
        points: rewritten_points,
        globals,
        memories,
        trampolines,
    } = rewrite_layout(module, points)?;
    let n = module.imported_functions;
    let k = rewritten_points.len() as u32;
    let d = module.functions.len() as u32 - n;
    let layout = Layout {
        n,
        k,
        d,
        globals: module.globals.len() as u32,
    };
    let import_types: Vec<u32> = module.functions[..n as usize]
        .iter()
        .map(|f| f.type_index)
        .collect();

    let mut rw = Rw {
        wasm,
        layout,
        point_of_defined: {
            let mut v = vec![None; d as usize];
            for (j, p) in rewritten_points.iter().enumerate() {
                v[(p.function - n) as usize] = Some(j as u32);
            }
            v
        },
        points: &rewritten_points,
        bodies: rewritten_points
            .iter()
            .map(|p| match module.functions[p.function as usize].kind {
                FunctionKind::Defined {
                    body_offset,
                    body_size,
                } => body_offset..body_offset + body_size,
                FunctionKind::Imported { .. } => unreachable!("checked by check_point"),
            })
            .collect(),
        import_types,
        param_counts: module.types.iter().map(|t| t.params.len() as u32).collect(),
        globals: &globals,
        memories: &memories,
        trampolines: &trampolines,
        flag_init: i32::from(config.flags_set),
        emitted: Emitted::default(),
        needs: Emitted {
            import: k > 0,
            function: k + n > 0,
            global: k > 0,
            export: k > 0 || !globals.is_empty() || !memories.is_empty() || n > 0,
            code: k + n > 0,
        },
    };
    let mut out = wasm_encoder::Module::new();
    rw.parse_core_module(&mut out, Parser::new(0), wasm)
        .map_err(|e| match e {
            ReError::ParseError(e) => ModelError::from_parser(&e, wasm.len()),
            other => ModelError::Unsupported(other.to_string()),
        })?;
    let out = out.finish();
    Validator::new_with_features(WasmFeatures::default())
        .validate_all(&out)
        .map_err(|e| ModelError::RewriteInvalid {
            offset: e.offset(),
            message: e.message().to_string(),
        })?;
    Ok(Rewritten {
        wasm: out,
        points: rewritten_points,
        globals,
        memories,
        trampolines,
    })
}

/// Where [`rewrite_with`] puts things when it makes `points` migration points of `module`
/// (which need not be sorted; each must pass [`Module::check_point`]), without rewriting: the
/// same checks and the same names, in time linear in the module's functions and globals.
pub fn rewrite_layout(module: &Module, points: &[u32]) -> Result<RewriteLayout, ModelError> {
    let mut points = points.to_vec();
    points.sort_unstable();
    points.dedup();
    for &p in &points {
        module.check_point(p)?;
    }
    if let Some(e) = module
        .exports
        .iter()
        .find(|e| e.name.starts_with(RESERVED_PREFIX))
    {
        return Err(ModelError::ReservedName {
            what: "export name",
            name: e.name.clone(),
        });
    }
    if let Some(i) = module.imports.iter().find(|i| i.module == IMPORT_MODULE) {
        return Err(ModelError::ReservedName {
            what: "import module",
            name: format!("{}.{}", i.module, i.name),
        });
    }

    let n = module.imported_functions;
    let k = points.len() as u32;
    let d = module.functions.len() as u32 - n;
    let layout = Layout {
        n,
        k,
        d,
        globals: module.globals.len() as u32,
    };
    let rewritten_points: Vec<RewrittenPoint> = points
        .iter()
        .enumerate()
        .map(|(j, &f)| RewrittenPoint {
            function: f,
            type_index: module.functions[f as usize].type_index,
            stub: layout.function(f),
            body: layout.body(j as u32),
            import: indexed("migrate.", f),
            local_export: indexed(LOCAL_PREFIX, f),
            flag_export: indexed(FLAG_PREFIX, f),
        })
        .collect();
    let globals: Vec<(u32, String)> = module
        .globals
        .iter()
        .filter(|g| g.mutable)
        .map(|g| (g.index, format!("{RESERVED_PREFIX}global.{}", g.index)))
        .collect();
    let memories: Vec<(u32, String)> = module
        .memories
        .iter()
        .map(|m| (m.index, format!("{RESERVED_PREFIX}memory.{}", m.index)))
        .collect();
    let trampolines: Vec<(u32, String)> = (0..n)
        .map(|i| (i, format!("{RESERVED_PREFIX}import.{i}")))
        .collect();
    Ok(RewriteLayout {
        points: rewritten_points,
        globals,
        memories,
        trampolines,
    })
}

const LOCAL_PREFIX: &str = "__cc_local.";
const FLAG_PREFIX: &str = "__cc_flag.";

/// `prefix` followed by `i` in decimal: `format!("{prefix}{i}")` without the formatting
/// machinery, since a layout makes three such names per point.
fn indexed(prefix: &str, mut i: u32) -> String {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (i % 10) as u8;
        i /= 10;
        if i == 0 {
            break;
        }
    }
    let mut s = String::with_capacity(prefix.len() + digits.len() - at);
    s.push_str(prefix);
    // The digits are ASCII.
    s.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
    s
}

/// Where things go in the new index spaces.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Imported functions.
    n: u32,
    /// Points.
    k: u32,
    /// Defined functions.
    d: u32,
    /// Globals in the original module.
    globals: u32,
}

impl Layout {
    fn function(&self, f: u32) -> u32 {
        if f < self.n { f } else { f + self.k }
    }
    fn migrate_import(&self, j: u32) -> u32 {
        self.n + j
    }
    fn body(&self, j: u32) -> u32 {
        self.n + self.k + self.d + j
    }
    fn trampoline(&self, i: u32) -> u32 {
        self.n + 2 * self.k + self.d + i
    }
    fn flag(&self, j: u32) -> u32 {
        self.globals + j
    }
}

/// Which of the sections the rewriter appends to have been written (or must be).
#[derive(Debug, Default, Clone, Copy)]
struct Emitted {
    import: bool,
    function: bool,
    global: bool,
    export: bool,
    code: bool,
}

struct Rw<'a> {
    wasm: &'a [u8],
    layout: Layout,
    /// Defined-function ordinal → point ordinal.
    point_of_defined: Vec<Option<u32>>,
    points: &'a [RewrittenPoint],
    /// Byte ranges of the points' original bodies in `wasm`.
    bodies: Vec<std::ops::Range<usize>>,
    import_types: Vec<u32>,
    /// Per type index: the number of parameters.
    param_counts: Vec<u32>,
    globals: &'a [(u32, String)],
    memories: &'a [(u32, String)],
    trampolines: &'a [(u32, String)],
    flag_init: i32,
    emitted: Emitted,
    needs: Emitted,
}

type ReResult<T = ()> = Result<T, ReError<std::convert::Infallible>>;

impl Rw<'_> {
    fn append_imports(&mut self, s: &mut ImportSection) {
        for p in self.points {
            s.import(IMPORT_MODULE, &p.import, EntityType::Function(p.type_index));
        }
        self.emitted.import = true;
    }

    fn append_functions(&mut self, s: &mut FunctionSection) {
        for p in self.points {
            s.function(p.type_index);
        }
        for &t in &self.import_types {
            s.function(t);
        }
        self.emitted.function = true;
    }

    fn append_globals(&mut self, s: &mut GlobalSection) {
        for _ in self.points {
            let ty = wasm_encoder::GlobalType {
                val_type: wasm_encoder::ValType::I32,
                mutable: true,
                shared: false,
            };
            s.global(ty, &ConstExpr::i32_const(self.flag_init));
        }
        self.emitted.global = true;
    }

    fn append_exports(&mut self, s: &mut ExportSection) {
        use wasm_encoder::ExportKind as K;
        for (j, p) in self.points.iter().enumerate() {
            s.export(&p.local_export, K::Func, p.body);
            s.export(&p.flag_export, K::Global, self.layout.flag(j as u32));
        }
        for (g, name) in self.globals {
            s.export(name, K::Global, *g);
        }
        for (m, name) in self.memories {
            s.export(name, K::Memory, *m);
        }
        for (i, name) in self.trampolines {
            s.export(name, K::Func, self.layout.trampoline(*i));
        }
        self.emitted.export = true;
    }

    fn append_code(&mut self, s: &mut CodeSection) -> ReResult {
        for range in self.bodies.clone() {
            let body = FunctionBody::new(BinaryReader::new(&self.wasm[range.clone()], range.start));
            self.parse_function_body(s, body)?;
        }
        for i in 0..self.layout.n {
            let params = self.param_count(self.import_types[i as usize]);
            let mut f = wasm_encoder::Function::new([]);
            let mut sink = f.instructions();
            for l in 0..params {
                sink.local_get(l);
            }
            sink.call(i).end();
            s.function(&f);
        }
        self.emitted.code = true;
        Ok(())
    }

    fn stub(&self, j: u32) -> wasm_encoder::Function {
        let p = &self.points[j as usize];
        let params = self.param_count(p.type_index);
        let mut f = wasm_encoder::Function::new([]);
        let mut sink = f.instructions();
        sink.global_get(self.layout.flag(j))
            .if_(wasm_encoder::BlockType::Empty);
        for l in 0..params {
            sink.local_get(l);
        }
        sink.call(self.layout.migrate_import(j)).return_().end();
        for l in 0..params {
            sink.local_get(l);
        }
        sink.return_call(p.body).end();
        f
    }

    fn param_count(&self, type_index: u32) -> u32 {
        self.param_counts[type_index as usize]
    }
}

/// The order in which sections must appear in a module.
fn rank(id: SectionId) -> u8 {
    match id {
        SectionId::Custom => 0,
        SectionId::Type => 1,
        SectionId::Import => 2,
        SectionId::Function => 3,
        SectionId::Table => 4,
        SectionId::Memory => 5,
        SectionId::Tag => 6,
        SectionId::Global => 7,
        SectionId::Export => 8,
        SectionId::Start => 9,
        SectionId::Element => 10,
        SectionId::DataCount => 11,
        SectionId::Code => 12,
        SectionId::Data => 13,
    }
}

/// Custom sections whose content refers to code offsets or object-file relocations, which the
/// rewrite invalidates.
fn drops_custom_section(name: &str) -> bool {
    name.starts_with(".debug_")
        || name.starts_with("reloc.")
        || name.starts_with("metadata.code.")
        || name == "linking"
        || name == "sourceMappingURL"
}

impl Reencode for Rw<'_> {
    type Error = std::convert::Infallible;

    fn function_index(&mut self, func: u32) -> ReResult<u32> {
        Ok(self.layout.function(func))
    }

    fn parse_import_section(
        &mut self,
        imports: &mut ImportSection,
        section: wasmparser::ImportSectionReader<'_>,
    ) -> ReResult {
        utils::parse_import_section(self, imports, section)?;
        self.append_imports(imports);
        Ok(())
    }

    fn parse_function_section(
        &mut self,
        functions: &mut FunctionSection,
        section: wasmparser::FunctionSectionReader<'_>,
    ) -> ReResult {
        utils::parse_function_section(self, functions, section)?;
        self.append_functions(functions);
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> ReResult {
        utils::parse_global_section(self, globals, section)?;
        self.append_globals(globals);
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> ReResult {
        utils::parse_export_section(self, exports, section)?;
        self.append_exports(exports);
        Ok(())
    }

    fn parse_code_section(
        &mut self,
        code: &mut CodeSection,
        section: wasmparser::CodeSectionReader<'_>,
    ) -> ReResult {
        for (defined, body) in section.into_iter().enumerate() {
            let body = body?;
            match self.point_of_defined.get(defined).copied().flatten() {
                Some(j) => {
                    code.function(&self.stub(j));
                }
                None => self.parse_function_body(code, body)?,
            }
        }
        self.append_code(code)
    }

    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> ReResult {
        // Called between sections: synthesise, in order, the sections the rewrite needs and the
        // module does not have (a module with no imports, no globals or no exports).
        let due = |id: SectionId| before.is_none_or(|b| rank(b) > rank(id));
        if self.needs.import && !self.emitted.import && due(SectionId::Import) {
            let mut s = ImportSection::new();
            self.append_imports(&mut s);
            module.section(&s);
        }
        if self.needs.function && !self.emitted.function && due(SectionId::Function) {
            let mut s = FunctionSection::new();
            self.append_functions(&mut s);
            module.section(&s);
        }
        if self.needs.global && !self.emitted.global && due(SectionId::Global) {
            let mut s = GlobalSection::new();
            self.append_globals(&mut s);
            module.section(&s);
        }
        if self.needs.export && !self.emitted.export && due(SectionId::Export) {
            let mut s = ExportSection::new();
            self.append_exports(&mut s);
            module.section(&s);
        }
        if self.needs.code && !self.emitted.code && due(SectionId::Code) {
            let mut s = CodeSection::new();
            self.append_code(&mut s)?;
            module.section(&s);
        }
        Ok(())
    }

    fn parse_custom_section(
        &mut self,
        module: &mut wasm_encoder::Module,
        section: wasmparser::CustomSectionReader<'_>,
    ) -> ReResult {
        if drops_custom_section(section.name()) {
            return Ok(());
        }
        match section.as_known() {
            wasmparser::KnownCustom::Name(reader) => {
                // A malformed name section (the validator does not look at custom sections) is
                // dropped rather than failing the rewrite: names are only for people.
                if let Ok(names) = self.name_section(reader) {
                    module.section(&names);
                }
                Ok(())
            }
            _ => utils::parse_custom_section(self, module, section),
        }
    }
}

impl Rw<'_> {
    /// The `name` section of the new module: functions keep their names (a point's stub and its
    /// body both carry the original name, so backtraces and profiles read naturally), local and
    /// label names follow the body, and the added functions get names of their own.
    fn name_section(&mut self, reader: wasmparser::NameSectionReader<'_>) -> ReResult<NameSection> {
        let mut out = NameSection::new();
        let body_of: HashMap<u32, u32> = self.points.iter().map(|p| (p.function, p.body)).collect();
        for sub in reader {
            match sub? {
                wasmparser::Name::Function(map) => {
                    let mut names: Vec<(u32, Cow<'_, str>)> = Vec::new();
                    for naming in map {
                        let naming = naming?;
                        names.push((self.layout.function(naming.index), naming.name.into()));
                        if let Some(&body) = body_of.get(&naming.index) {
                            names.push((body, naming.name.into()));
                        }
                    }
                    for (j, p) in self.points.iter().enumerate() {
                        names.push((
                            self.layout.migrate_import(j as u32),
                            format!("{IMPORT_MODULE}.{}", p.import).into(),
                        ));
                    }
                    for (i, name) in self.trampolines {
                        names.push((self.layout.trampoline(*i), name.as_str().into()));
                    }
                    names.sort_by_key(|(i, _)| *i);
                    let mut map = NameMap::new();
                    for (i, name) in &names {
                        map.append(*i, name);
                    }
                    out.functions(&map);
                }
                sub @ (wasmparser::Name::Local(_) | wasmparser::Name::Label(_)) => {
                    let (map, is_local) = match sub {
                        wasmparser::Name::Local(m) => (m, true),
                        wasmparser::Name::Label(m) => (m, false),
                        _ => unreachable!(),
                    };
                    let mut entries: Vec<(u32, NameMap)> = Vec::new();
                    for indirect in map {
                        let indirect = indirect?;
                        let index = body_of
                            .get(&indirect.index)
                            .copied()
                            .unwrap_or_else(|| self.layout.function(indirect.index));
                        let inner = utils::name_map(indirect.names, Ok)?;
                        entries.push((index, inner));
                    }
                    entries.sort_by_key(|(i, _)| *i);
                    let mut map = IndirectNameMap::new();
                    for (i, inner) in &entries {
                        map.append(*i, inner);
                    }
                    if is_local {
                        out.locals(&map)
                    } else {
                        out.labels(&map)
                    }
                }
                other => utils::parse_custom_name_subsection(self, &mut out, other)?,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{FLAG_PREFIX, LOCAL_PREFIX, RESERVED_PREFIX, indexed};
    use crate::{Module, RewriteConfig, rewrite_layout, rewrite_with};

    #[test]
    fn the_layout_is_where_the_rewrite_puts_things() {
        let wasm = wat::parse_str(
            r#"(module
                (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
                (memory 1)
                (global (mut i32) (i32.const 0))
                (global i64 (i64.const 1))
                (global (mut f64) (f64.const 0))
                (func $a (result i32) i32.const 1)
                (func $b (param i32) (result i32) local.get 0 call $a i32.add)
                (func $c (param i64 f32))
                (export "b" (func $b)))"#,
        )
        .unwrap();
        let module = Module::parse(&wasm).unwrap();
        // Unsorted, with a duplicate: the layout sorts and deduplicates as the rewrite does.
        for points in [vec![], vec![3, 1], vec![1, 2, 3, 2]] {
            let layout = rewrite_layout(&module, &points).unwrap();
            let out =
                rewrite_with(&module, &wasm, &points, &RewriteConfig { flags_set: true }).unwrap();
            assert_eq!(layout.points, out.points);
            assert_eq!(layout.globals, out.globals);
            assert_eq!(layout.memories, out.memories);
            assert_eq!(layout.trampolines, out.trampolines);
        }
        assert!(
            rewrite_layout(&module, &[0]).is_err(),
            "an import is no point"
        );
    }

    #[test]
    fn indexed_names_are_formatted_names() {
        assert_eq!(LOCAL_PREFIX, format!("{RESERVED_PREFIX}local."));
        assert_eq!(FLAG_PREFIX, format!("{RESERVED_PREFIX}flag."));
        for i in [0, 7, 10, 99, 100, 12345, u32::MAX] {
            assert_eq!(indexed("migrate.", i), format!("migrate.{i}"));
        }
    }
}
